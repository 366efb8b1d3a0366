"""DBOS's side of the benchmark: the same work on DBOS Transact with its SQLite system database.

What a crash can lose with DBOS on SQLite (read in the installed dbos 3.4.0 package): a step's
result is committed before the step returns to its workflow, so before the next step runs —
``invoke_step``'s ``record_step_result`` in ``dbos/_core.py`` calls
``SystemDatabase.record_operation_result`` (``dbos/_sys_db.py``), which writes the step's row in
its own ``engine.begin()`` transaction, and a workflow's status row is likewise committed by
``init_workflow`` before its body runs; a crash therefore loses at most the step in flight,
whose body runs again on recovery (at-least-once), never a completed step's output.
``dbos/_sys_db_sqlite.py`` sets only ``isolation_level = "IMMEDIATE"``,
``PRAGMA busy_timeout=30000`` and ``PRAGMA foreign_keys=ON`` on each connection, and no
``journal_mode`` or ``synchronous`` pragma anywhere in the package, so SQLite's defaults hold:
a rollback journal (``journal_mode=delete``, not WAL) with ``synchronous=FULL`` (2), i.e. every
commit is fsynced (both read back from DBOS's own engine on this machine).

Importable (``measure_dbos``) and runnable alone: ``.venv-dbos/bin/python -m
benchmarks.dbos_side``. Imports only the standard library and dbos: it runs in DBOS's own
virtualenv, which has no stepflow-stream (nor its faust-streaming, whose croniter pin DBOS's
conflicts with).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

APP_NAME = "stepflow_bench_dbos"
SYS_DB_FILE = "dbos_system.sqlite"
CHAIN_LENGTH = 10
WARMUP_WORKFLOWS = 200
WARMUP_CHAINS = 20

# How the batch is started. DBOS.start_workflow (durable status row written in the caller's
# thread, body run on DBOS's executor) with the executor capped at 2 threads (one per core) was
# the fastest concurrent way measured on this 2-core machine with SQLite (batches of 1,000-5,000,
# one no-op step each, workflows/s): start_workflow with 1-4 executor threads 145-160; with the
# default unbounded executor ~110; async workflows started with start_workflow_async or called
# directly under asyncio.gather 100-135; a DBOS Queue (worker_concurrency 1-16, polling 50 ms)
# 60-93. SQLite serialises writers and DBOS waits out a locked database with SQLite's busy
# handler, which sleeps in whole milliseconds, so more concurrent writers only add lock waits:
# even running the workflows one after another in one thread (165-175/s) beats every concurrent
# way.
EXECUTOR_THREADS = 2


def dbos_available() -> bool:
    """Whether the dbos package can be imported (in ``.venv-dbos``, which ``python -m
    benchmarks`` creates: DBOS cannot share ``.venv`` with faust-streaming)."""
    try:
        import dbos  # noqa: F401
    except Exception:
        return False
    return True


def dbos_version() -> str | None:
    try:
        return metadata.version("dbos")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class _Workflows:
    one_step: Callable[[], dict[str, Any]]
    chain: Callable[[], int]


_registered: _Workflows | None = None


def _register() -> _Workflows:
    """Register the benchmark's step and workflows with DBOS once per process.

    DBOS keeps registrations in a process-wide registry that ``DBOS.destroy()`` keeps, so a
    second ``measure_dbos`` in the same process reuses them.
    """
    global _registered
    if _registered is None:
        from dbos import DBOS

        @DBOS.step()
        def noop_step() -> dict[str, Any]:
            return {}

        @DBOS.workflow()
        def one_step_workflow() -> dict[str, Any]:
            return noop_step()

        @DBOS.workflow()
        def chain_workflow() -> int:
            for _ in range(CHAIN_LENGTH):
                noop_step()
            return CHAIN_LENGTH

        _registered = _Workflows(one_step=one_step_workflow, chain=chain_workflow)
    return _registered


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Same rule as benchmarks.embedded_side, so both sides' percentiles compare."""
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _remove_database(db_path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)


def _run_batch(workflows: _Workflows, count: int) -> float:
    """Start ``count`` one-step workflows concurrently, wait for all; returns the seconds."""
    from dbos import DBOS

    started = time.perf_counter()
    handles = [DBOS.start_workflow(workflows.one_step) for _ in range(count)]
    for handle in handles:
        if handle.get_result() != {}:
            raise RuntimeError(f"workflow {handle.get_workflow_id()} returned a wrong result")
    return time.perf_counter() - started


def _run_chain(workflows: _Workflows) -> float:
    """One 10-step workflow run alone, inline in the calling thread; returns the seconds."""
    started = time.perf_counter()
    result = workflows.chain()
    elapsed = time.perf_counter() - started
    if result != CHAIN_LENGTH:
        raise RuntimeError(f"chain workflow returned {result!r}")
    return elapsed


def measure_dbos(
    work_dir: Path, batch_size: int = 10_000, chain_runs: int = 200
) -> dict[str, float]:
    """Launch DBOS on a fresh SQLite system database in ``work_dir``, measure, destroy it.

    Returns ``runs_per_s`` (a batch of ``batch_size`` one-no-op-step workflows started at
    once), and the latency of a 10-sequential-no-op-step workflow run alone ``chain_runs``
    times: ``chain10_p50_ms``, ``chain10_p99_ms`` and ``chain10_per_step_us`` (p50 / 10).
    """
    if batch_size < 1 or chain_runs < 1:
        raise ValueError("batch_size and chain_runs must be positive")
    from dbos import DBOS, DBOSConfig

    workflows = _register()
    work_dir.mkdir(parents=True, exist_ok=True)
    db_path = work_dir / SYS_DB_FILE
    _remove_database(db_path)
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": f"sqlite:///{db_path}",
        "log_level": "ERROR",
        "max_executor_threads": EXECUTOR_THREADS,
    }
    DBOS(config=config)
    try:
        DBOS.launch()
        _run_batch(workflows, min(WARMUP_WORKFLOWS, batch_size))
        for _ in range(WARMUP_CHAINS):
            _run_chain(workflows)

        batch_seconds = _run_batch(workflows, batch_size)
        latencies = sorted(_run_chain(workflows) for _ in range(chain_runs))
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)

    p50_ms = _percentile(latencies, 0.50) * 1e3
    return {
        "runs_per_s": batch_size / batch_seconds,
        "batch_seconds": batch_seconds,
        "chain10_p50_ms": p50_ms,
        "chain10_p99_ms": _percentile(latencies, 0.99) * 1e3,
        "chain10_per_step_us": p50_ms / CHAIN_LENGTH * 1e3,
    }


def _journal_mode(db_path: Path) -> str:
    """The journal mode SQLite reports for the file DBOS left (WAL would persist in it)."""
    connection = sqlite3.connect(db_path)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--chain-runs", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where to put the SQLite system database (default: a temp dir)")
    args = parser.parse_args(argv)
    if not dbos_available():
        print("dbos is not installed here: run this with .venv-dbos/bin/python "
              "(./benchmarks/run creates it)", file=sys.stderr)
        return 1

    temp_dir = None if args.work_dir else tempfile.mkdtemp(prefix="stepflow-bench-dbos-")
    work_dir: Path = args.work_dir or Path(temp_dir or ".")
    try:
        started = time.perf_counter()
        figures = measure_dbos(work_dir, args.batch_size, args.chain_runs)
        wall = time.perf_counter() - started
        journal_mode = _journal_mode(work_dir / SYS_DB_FILE)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    print(f"DBOS {dbos_version()} on SQLite (journal_mode={journal_mode}), "
          f"{EXECUTOR_THREADS} executor threads")
    print(f"  batch of {args.batch_size} one-step workflows: {figures['runs_per_s']:.1f} runs/s "
          f"({figures['batch_seconds']:.2f} s)")
    print(f"  10-step workflow alone, {args.chain_runs} runs: "
          f"p50 {figures['chain10_p50_ms']:.2f} ms, p99 {figures['chain10_p99_ms']:.2f} ms, "
          f"{figures['chain10_per_step_us']:.0f} us/step at p50")
    print(f"  whole measurement: {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
