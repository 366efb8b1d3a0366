"""DBOS's side of the distributed baselines: DBOS Transact with its PostgreSQL system database.

Runs under ``.venv-dbos`` (DBOS's croniter pin conflicts with faust-streaming's, so DBOS has a
virtualenv of its own that ``python -m benchmarks`` creates): it imports only the standard
library, dbos (and psycopg, which dbos brings) and ``benchmarks.dbos_side``, which is as pure.

DBOS gets a database of its own, ``dbos_bench`` on the server of ``$STEPFLOW_POSTGRES_URL``
(``--postgres-url``), dropped and created again at each start so every measurement starts
empty, and dropped at the end. A step's result is committed (and, with the server's
``synchronous_commit=on``, its WAL flushed) before the next step runs, as on SQLite (see
``benchmarks/dbos_side.py``).

Measures:

- a 10-step chain of no-op ``@DBOS.step`` steps in one ``@DBOS.workflow``, run inline one after
  another after a warm-up: p50/p99 per workflow, and per step (p50 / 10);
- a batch of one-no-op-step workflows: runs/s, started the fastest way found (see
  ``SUBMITTERS``).

``python -m benchmarks.dbos_postgres_side`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from benchmarks.dbos_side import (
    CHAIN_LENGTH,
    WARMUP_CHAINS,
    WARMUP_WORKFLOWS,
    _percentile,
    _register,
    _run_chain,
    _Workflows,
    dbos_version,
)

APP_NAME = "stepflow_bench_dbos_pg"
DATABASE = "dbos_bench"
# How the batch runs: SUBMITTERS threads, each starting its share of the workflows with
# DBOS.start_workflow (the durable status row written in the submitting thread, the body run on
# DBOS's executor of EXECUTOR_THREADS threads) and then waiting for their results. Measured on
# this 2-core machine against the local PostgreSQL 15 (batches of 2,000-5,000, workflows/s):
# start_workflow from 1-16 submitting threads with 2-32 executor threads 220-330, best at 2
# submitters and 4 executor threads (300-330), more threads only slower; the workflow called
# directly from 1-16 threads 205-275; async workflows under asyncio.gather (16-64 at once)
# 190-270; a DBOS Queue (worker_concurrency 8-32, polling 10 ms) 140-155. The Python process
# holds the GIL most of the time; Postgres commits (fdatasync, ~1.5 ms here) overlap.
SUBMITTERS = 2
EXECUTOR_THREADS = 4


def _database_url(server_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def _recreate_database(server_url: str, database: str) -> None:
    """Drop ``database`` (ending its sessions) and create it empty, connected to the database of
    ``server_url`` (whose role may create databases)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database}"')


def _drop_database(server_url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _server_settings(url: str) -> dict[str, str]:
    """The server settings that decide what a commit costs."""
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'wal_sync_method', 'server_version')"
        ).fetchall()
    return {str(name): str(setting) for name, setting in rows}


def _run_batch(workflows: _Workflows, count: int, submitters: int) -> float:
    """``count`` one-step workflows, started by ``submitters`` threads at once; the seconds
    until all have finished."""
    from dbos import DBOS

    shares = [count // submitters + (i < count % submitters) for i in range(submitters)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(submitters + 1)

    def submit(share: int) -> None:
        try:
            barrier.wait()
            handles = [DBOS.start_workflow(workflows.one_step) for _ in range(share)]
            for handle in handles:
                if handle.get_result() != {}:
                    raise RuntimeError(f"workflow {handle.get_workflow_id()} returned wrong")
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def measure_dbos_postgres(
    server_url: str,
    batch_size: int = 5_000,
    chain_runs: int = 200,
    *,
    submitters: int = SUBMITTERS,
    executor_threads: int = EXECUTOR_THREADS,
    keep_database: bool = False,
) -> dict[str, Any]:
    """Launch DBOS on an empty ``dbos_bench`` database of the server of ``server_url``,
    measure, destroy DBOS and drop the database (unless ``keep_database``).

    Returns ``runs_per_s`` (a batch of ``batch_size`` one-no-op-step workflows),
    ``chain10_p50_ms``, ``chain10_p99_ms`` (a 10-no-op-step workflow run alone ``chain_runs``
    times), ``chain10_per_step_p50_ms`` and ``chain10_per_step_p99_ms`` (those / 10), and the
    server's commit settings.
    """
    if batch_size < 1 or chain_runs < 1 or submitters < 1 or executor_threads < 1:
        raise ValueError("batch_size, chain_runs, submitters and executor_threads must be >= 1")
    from dbos import DBOS, DBOSConfig

    workflows = _register()
    url = _database_url(server_url, DATABASE)
    _recreate_database(server_url, DATABASE)
    try:
        settings = _server_settings(url)
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": url,
            "log_level": "ERROR",
            "max_executor_threads": executor_threads,
            # One connection per thread that may write at once: the submitters, the executor,
            # DBOS's own background threads.
            "sys_db_pool_size": submitters + executor_threads + 4,
        }
        DBOS(config=config)
        try:
            DBOS.launch()
            for _ in range(WARMUP_CHAINS):
                _run_chain(workflows)
            latencies = sorted(_run_chain(workflows) for _ in range(chain_runs))
            _run_batch(workflows, min(WARMUP_WORKFLOWS, batch_size), submitters)
            batch_seconds = _run_batch(workflows, batch_size, submitters)
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=0)
    finally:
        if not keep_database:
            _drop_database(server_url, DATABASE)

    p50_ms = _percentile(latencies, 0.50) * 1e3
    p99_ms = _percentile(latencies, 0.99) * 1e3
    return {
        "runs_per_s": batch_size / batch_seconds,
        "batch_seconds": batch_seconds,
        "batch_size": batch_size,
        "chain10_p50_ms": p50_ms,
        "chain10_p99_ms": p99_ms,
        "chain10_per_step_p50_ms": p50_ms / CHAIN_LENGTH,
        "chain10_per_step_p99_ms": p99_ms / CHAIN_LENGTH,
        "chain_runs": chain_runs,
        "submitters": submitters,
        "executor_threads": executor_threads,
        "postgres": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres-url", default=os.environ.get("STEPFLOW_POSTGRES_URL"),
                        help="a database of the server, whose role may create databases "
                             "(default: $STEPFLOW_POSTGRES_URL)")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--chain-runs", type=int, default=200)
    parser.add_argument("--submitters", type=int, default=SUBMITTERS)
    parser.add_argument("--executor-threads", type=int, default=EXECUTOR_THREADS)
    parser.add_argument("--keep-database", action="store_true",
                        help=f"leave the {DATABASE} database for inspection")
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("no PostgreSQL: pass --postgres-url or set STEPFLOW_POSTGRES_URL "
                     '(eval "$(./stepflow-stream infra up)")')
    figures = measure_dbos_postgres(
        args.postgres_url, args.batch_size, args.chain_runs, submitters=args.submitters,
        executor_threads=args.executor_threads, keep_database=args.keep_database,
    )
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["version"] = dbos_version()
    json.dump(figures, sys.stdout)


if __name__ == "__main__":
    main()
