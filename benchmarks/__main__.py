"""``python -m benchmarks`` (or ``./benchmarks/run``): the figures the issues ask for, with the
baselines measured in the same run on the same machine.

Each measurement runs in a fresh process so that peak memory is its own. Figures are medians
(p50) of repeated runs, and the table shows ratios against the baseline measured alongside:
the machines are shared and noisy, absolute numbers move from run to run.

DBOS runs in a virtualenv of its own, ``.venv-dbos`` (created on first use): dbos 3.4.0 needs
``croniter>=6.2.4`` and faust-streaming's ``mode-streaming`` needs ``croniter<6``, so the two
cannot share ``.venv``. Its side scripts (``dbos_side.py``, ``dbos_postgres_side.py``) import
only the standard library, dbos and each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

DBOS_VENV = REPO / ".venv-dbos"
DBOS_REQUIREMENT = "dbos==3.4.0"
"""What ``.venv-dbos`` gets; dbos brings psycopg[binary] and SQLAlchemy, all the side scripts
need beyond the standard library."""
_DBOS_STAMP = DBOS_VENV / f".installed-{DBOS_REQUIREMENT}"

KAFKA_ROUND_TRIPS = 500
DISTRIBUTED_SIDE = REPO / "benchmarks" / "distributed_side.py"
"""stepflow-stream's own side of the distributed section, written later; run only if present."""

_DBOS_SNIPPET = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    from pathlib import Path
    from benchmarks.dbos_side import dbos_version, measure_dbos
    with tempfile.TemporaryDirectory() as work:
        figures = measure_dbos(Path(work), int(sys.argv[1]), int(sys.argv[2]))
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["version"] = dbos_version()
    json.dump(figures, sys.stdout)
    """
)


def _measure(args: list[str], *, python: Path | str = sys.executable,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python ARGS`` in the repository and return the JSON object its last line holds."""
    completed = subprocess.run(
        [str(python), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(args)} failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _embedded(measure: str, items: int, runs: int) -> dict[str, Any]:
    return _measure(["-m", "benchmarks.embedded_side", measure, "--items", str(items),
                     "--runs", str(runs)])


# --- DBOS's virtualenv ------------------------------------------------------------------------

_dbos_python_cache: list[Path | None] = []


def dbos_python() -> Path | None:
    """The interpreter of ``.venv-dbos``, creating the virtualenv and installing
    ``DBOS_REQUIREMENT`` into it first if needed (once per process); ``None``, with a message
    on stderr, when that fails."""
    if not _dbos_python_cache:
        _dbos_python_cache.append(_ensure_dbos_venv())
    return _dbos_python_cache[0]


def _ensure_dbos_venv() -> Path | None:
    python = DBOS_VENV / "bin" / "python"
    if python.exists() and _DBOS_STAMP.exists():
        return python
    print(f"creating {DBOS_VENV.name} for DBOS ({DBOS_REQUIREMENT}; its croniter pin conflicts "
          "with faust-streaming's) ...", file=sys.stderr, flush=True)
    log = DBOS_VENV / "install.log"
    steps = [
        ("python -m venv", [sys.executable, "-m", "venv", str(DBOS_VENV)]),
        (f"pip install {DBOS_REQUIREMENT}",
         [str(python), "-m", "pip", "install", "--disable-pip-version-check", DBOS_REQUIREMENT]),
    ]
    step = "mkdir"
    try:
        DBOS_VENV.mkdir(exist_ok=True)
        with log.open("w") as output:
            for name, command in steps:
                step = name
                if subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                                  check=False).returncode != 0:
                    raise OSError(f"it exited non-zero, see {log}")
        _DBOS_STAMP.touch()
    except OSError as error:
        print(f"DBOS skipped: creating {DBOS_VENV} failed at {step}: {error}",
              file=sys.stderr, flush=True)
        return None
    return python


def _dbos(items: int, runs: int) -> dict[str, Any] | None:
    python = dbos_python()
    if python is None:
        return None
    return _measure(["-c", _DBOS_SNIPPET, str(items), str(runs)], python=python)


def _dbos_label(dbos: dict[str, Any] | None, args: argparse.Namespace) -> str:
    if dbos:
        return f"DBOS {dbos['version']}"
    return "DBOS (skipped)" if args.no_dbos else "DBOS (unavailable)"


# --- the command ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stepflow-stream benchmarks")
    parser.add_argument("--items", type=int, default=10_000, help="runs in the batch")
    parser.add_argument("--runs", type=int, default=300, help="runs of the 10-step chain")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS baselines")
    parser.add_argument("--only",
                        choices=["embedded", "components", "distributed", "gateway", "lb",
                                 "ingest"],
                        help="one section only (default: all)")
    parser.add_argument("--subscribers", type=int, default=1000,
                        help="SSE streams following one run (gateway section)")
    parser.add_argument("--lb-reps", type=int, default=5,
                        help="repetitions of the load balancer's measures (lb section)")
    args = parser.parse_args(argv)
    if args.only in (None, "embedded"):
        _embedded_section(args)
    if args.only in (None, "components"):
        _components_section(args)
    if args.only in (None, "distributed"):
        _distributed_section(args)
    if args.only in (None, "gateway"):
        _gateway_section(args)
    if args.only in (None, "lb"):
        _lb_section(args)
    if args.only in (None, "ingest"):
        _ingest_section(args)
    return 0


def _gateway_section(args: argparse.Namespace) -> None:
    print(f"\ngateway: {args.subscribers:,} SSE streams on one gateway process following one "
          "run of 62 events (agents: direct driver)", flush=True)
    figures = _measure(["-m", "benchmarks.sse_side", "--subscribers", str(args.subscribers)],
                       env=infra_env())
    print()
    print(f"| measure (median of {figures['repetitions']} runs) | p50 | p99 | max |")
    print("|---|---|---|---|")
    print(f"| fan-out: visible on the journal topic to received | {figures['fanout_p50_ms']:.1f} ms"
          f" | {figures['fanout_p99_ms']:.1f} ms | - |")
    print(f"| decided by the orchestrator to received | {figures['delay_p50_ms']:.1f} ms | "
          f"{figures['delay_p99_ms']:.1f} ms | {figures['delay_max_ms']:.1f} ms |")
    print(f"\n- gateway CPU while sending: {figures['cpu_us_per_message']:.1f} us per SSE message, "
          f"{figures['cpu_us_per_send']:.0f} us per write ({figures['sends_per_stream']:.1f} "
          f"writes per stream); {figures['cpu_us_per_stream_end']:.0f} us per stream end; "
          f"{figures['idle_cpu_pct']:.0f}% of a core idle")
    print(f"- {figures['complete_streams']:,} of {figures['subscribers']:,} streams got all "
          f"{figures['events']} events; the subscribers run in "
          f"{figures['subscriber_processes']} Python processes on the same machine")


def _components_section(args: argparse.Namespace) -> None:
    print("\ncomponent server: one Python server (serve-components), stepflow plugin, "
          "embedded runtime with the SQLite journal", flush=True)
    figures = _measure(["-m", "benchmarks.components_side", "--items",
                        str(min(args.items, 5_000))])
    print()
    print("| measure | through one component server | called directly | added |")
    print("|---|---|---|---|")
    print(f"| 1-step echo runs | {figures['runs_per_s']:,.0f} runs/s | - | - |")
    print(f"| one call, p50 | {figures['call_p50_ms']:.3f} ms | "
          f"{figures['direct_p50_ms'] * 1e3:.1f} us | {figures['added_p50_ms']:.3f} ms |")
    print(f"| one call, p99 | {figures['call_p99_ms']:.3f} ms | - | "
          f"{figures['added_p99_ms']:.3f} ms |")


def _embedded_section(args: argparse.Namespace) -> None:

    print(f"embedded runtime, SQLite journal (WAL, synchronous=FULL), {args.items:,}-run batch",
          flush=True)
    batch = _embedded("batch", args.items, args.runs)
    chain10 = _embedded("chain10", args.items, args.runs)
    chain100 = _embedded("chain100", args.items, args.runs)
    fanout = _embedded("fanout100", args.items, args.runs)
    dbos = None if args.no_dbos else _dbos(args.items, min(args.runs, 200))

    rows = [
        ("1-step noop batch", f"{batch['runs_per_s']:,.0f} runs/s",
         f"{dbos['runs_per_s']:,.0f} runs/s" if dbos else "-",
         f"{batch['runs_per_s'] / dbos['runs_per_s']:.1f}x" if dbos else "-"),
        ("10-step chain alone, p50", f"{chain10['p50_ms']:.2f} ms",
         f"{dbos['chain10_p50_ms']:.2f} ms" if dbos else "-",
         f"{dbos['chain10_p50_ms'] / chain10['p50_ms']:.1f}x" if dbos else "-"),
        ("10-step chain alone, p99", f"{chain10['p99_ms']:.2f} ms",
         f"{dbos['chain10_p99_ms']:.2f} ms" if dbos else "-",
         f"{dbos['chain10_p99_ms'] / chain10['p99_ms']:.1f}x" if dbos else "-"),
        ("per-step overhead, 100-step chain p50", f"{chain100['p50_ms'] * 10:.0f} us", "-", "-"),
        ("100-wide fan-out, p50 per run", f"{fanout['p50_ms']:.2f} ms", "-", "-"),
        ("100-wide fan-out, p99 per run", f"{fanout['p99_ms']:.2f} ms", "-", "-"),
        (f"peak memory, {args.items:,}-run batch", f"{batch['peak_rss_mb']:.0f} MB",
         f"{dbos['peak_rss_mb']:.0f} MB" if dbos else "-", "-"),
    ]
    print()
    print(f"| measure | stepflow-stream | {_dbos_label(dbos, args)} (SQLite) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# --- the distributed section ------------------------------------------------------------------


def infra_env() -> dict[str, str]:
    """This process's environment with ``STEPFLOW_KAFKA_BOOTSTRAP`` and
    ``STEPFLOW_POSTGRES_URL`` set: as given, or else from the local services, started if they
    do not run (what ``./stepflow-stream infra up`` prints)."""
    from stepflow_stream.infra import DEFAULT_DIR, ensure_kafka, ensure_postgres

    env = dict(os.environ)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if not env.get("STEPFLOW_KAFKA_BOOTSTRAP"):
        env["STEPFLOW_KAFKA_BOOTSTRAP"] = ensure_kafka(REPO / DEFAULT_DIR, progress=progress)
    if not env.get("STEPFLOW_POSTGRES_URL"):
        env["STEPFLOW_POSTGRES_URL"] = ensure_postgres(REPO / DEFAULT_DIR, progress=progress)
    return env


def _kafka_baseline(env: dict[str, str]) -> dict[str, Any]:
    return _measure(["-m", "benchmarks.kafka_baseline", "--round-trips",
                     str(KAFKA_ROUND_TRIPS)], env=env)


def _dbos_postgres(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any] | None:
    if args.no_dbos:
        return None
    python = dbos_python()
    if python is None:
        return None
    return _measure(["-m", "benchmarks.dbos_postgres_side",
                     "--batch-size", str(min(args.items, 5_000)),
                     "--chain-runs", str(min(args.runs, 200))], python=python, env=env)


def stepflow_distributed(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any] | None:
    """HOOK for stepflow-stream's distributed runtime: ``None`` until
    ``benchmarks/distributed_side.py`` exists.

    The contract for that file: ``python -m benchmarks.distributed_side --items N --runs M``,
    run with ``.venv``'s interpreter in the repository, with ``STEPFLOW_KAFKA_BOOTSTRAP`` and
    ``STEPFLOW_POSTGRES_URL`` in its environment (the same services the baselines use), prints
    one JSON object as its last stdout line with any of these keys (a missing one shows "-"):
    ``chain10_p50_ms``, ``chain10_p99_ms`` (a 10-no-op-step flow run alone, ``M`` times),
    ``runs_per_s`` (a batch of ``N`` one-no-op-step runs); and, optionally,
    ``label``, a few words said in the table's header (for example the partition count).
    """
    if not DISTRIBUTED_SIDE.exists():
        return None
    return _measure(["-m", "benchmarks.distributed_side", "--items", str(args.items),
                     "--runs", str(args.runs)], env=env)


def _ms(figures: dict[str, Any] | None, key: str, divisor: float = 1.0) -> str:
    if not figures or key not in figures:
        return "-"
    return f"{figures[key] / divisor:.2f} ms"


def _ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, key: str,
           higher_is_better: bool = False) -> str:
    """How many times better ``ours`` is than ``theirs`` on ``key``."""
    if not ours or not theirs or key not in ours or key not in theirs:
        return "-"
    ratio = ours[key] / theirs[key] if higher_is_better else theirs[key] / ours[key]
    return f"{ratio:.1f}x"


def _ours_label(figures: dict[str, Any]) -> str:
    return "stepflow-stream" + (f" ({figures['label']})" if figures.get("label") else "")


def _distributed_section(args: argparse.Namespace) -> None:
    print("\ndistributed runtime baselines: the local Kafka broker and PostgreSQL server",
          flush=True)
    if args.only is None:
        from stepflow_stream.infra import InfraError

        try:
            env = infra_env()
        except InfraError as error:  # the full run goes on without this section
            print(f"distributed section skipped: the local services did not start: {error}")
            return
    else:
        env = infra_env()
    kafka = _kafka_baseline(env)
    dbos = _dbos_postgres(args, env)
    ours = stepflow_distributed(args, env)  # HOOK: None until distributed_side.py exists

    columns: list[tuple[str, dict[str, Any] | None]] = []
    if ours is None:
        columns.append(("stepflow-stream (distributed_side.py not written yet)", None))
    else:
        extra = {k: v for k, v in ours.items() if isinstance(v, dict)}
        columns.append((_ours_label(ours), ours))
        columns.extend((_ours_label(figures), figures) for figures in extra.values())
    dbos_label = f"{_dbos_label(dbos, args)} (PostgreSQL)"
    steps = 10

    def runs(figures: dict[str, Any] | None) -> str:
        return f"{figures['runs_per_s']:,.0f} runs/s" if figures and "runs_per_s" in figures \
            else "-"

    rows = [
        ("per step, p50 (10-step chain / 10; raw: a round trip)",
         [_ms(f, "chain10_p50_ms", steps) for _, f in columns],
         _ms(kafka, "round_trip_p50_ms"), _ms(dbos, "chain10_p50_ms", steps), "chain10_p50_ms",
         False),
        ("per step, p99 (10-step chain / 10; raw: a round trip)",
         [_ms(f, "chain10_p99_ms", steps) for _, f in columns],
         _ms(kafka, "round_trip_p99_ms"), _ms(dbos, "chain10_p99_ms", steps), "chain10_p99_ms",
         False),
        ("10-step chain alone, p50", [_ms(f, "chain10_p50_ms") for _, f in columns], "-",
         _ms(dbos, "chain10_p50_ms"), "chain10_p50_ms", False),
        ("10-step chain alone, p99", [_ms(f, "chain10_p99_ms") for _, f in columns], "-",
         _ms(dbos, "chain10_p99_ms"), "chain10_p99_ms", False),
        ("1-step noop runs", [runs(f) for _, f in columns], "-", runs(dbos), "runs_per_s", True),
    ]
    print()
    labels = " | ".join(label for label, _ in columns)
    versus = " | ".join(f"{label.split(' (')[-1].rstrip(')')} vs DBOS" for label, _ in columns)
    print(f"| measure | {labels} | raw aiokafka | {dbos_label} | {versus} |")
    print("|---|" + "---|" * (len(columns) * 2 + 2))
    for name, ours_cells, raw, theirs, key, higher in rows:
        ratios = [_ratio(f, dbos, key, higher_is_better=higher) for _, f in columns]
        print("| " + " | ".join([name, *ours_cells, raw, theirs, *ratios]) + " |")
    per_step = [f for _, f in columns if f and "chain10_p50_ms" in f]
    if per_step and kafka and "round_trip_p50_ms" in kafka:
        for label, figures in columns:
            if figures and "chain10_p50_ms" in figures:
                multiple = figures["chain10_p50_ms"] / steps / kafka["round_trip_p50_ms"]
                print(f"- {label}: a step's p50 is {multiple:.1f}x the raw round trip")
    notes = [f"raw aiokafka: {KAFKA_ROUND_TRIPS:,} sequential round trips, produce to X, "
             "consume and produce to Y, consume (idempotent producers, linger 0, "
             "read_committed consumers), one process"]
    if dbos:
        pg = dbos["postgres"]
        notes.append(
            f"DBOS: per step = the 10-step workflow / 10, {dbos['chain_runs']:,} runs alone; "
            f"{dbos['batch_size']:,}-run batch, start_workflow from {dbos['submitters']} threads,"
            f" {dbos['executor_threads']} executor threads; PostgreSQL "
            f"{pg.get('server_version', '?').split()[0]} with fsync={pg.get('fsync')}, "
            f"synchronous_commit={pg.get('synchronous_commit')}")
    print()
    for note in notes:
        print(f"- {note}")


# --- the load balancer section ----------------------------------------------------------------


def _lb_section(args: argparse.Namespace) -> None:
    print(f"\nload balancer: `stepflow-stream lb` and nginx in front of the same component servers "
          f"(serve-components, one no-op echo component), wrk, medians of {args.lb_reps} "
          f"repetition{'s' if args.lb_reps != 1 else ''}", flush=True)
    figures = _measure(["-m", "benchmarks.lb_side", "--reps", str(args.lb_reps)])
    latency, throughput = figures["latency"], figures["throughput"]
    direct, ours, nginx = latency["direct"], latency["lb"], latency["nginx"]
    connections = figures["connections"]

    def per_s(variant: str, target: str) -> str:
        return f"{throughput[variant][target]['per_s']:,.0f} req/s"

    def cpu(variant: str, target: str) -> str:
        return f"{throughput[variant][target]['proxy_cpu_us']:.0f} us"

    def versus(variant: str) -> str:
        ratio = throughput[variant]["lb_vs_nginx"]
        return f"{ratio:.2f}x ({'meets' if ratio >= 0.5 else 'misses'} >= 0.5x)"

    added = ours["added_p50_ms"]
    rows = [
        ("one call alone, p50", f"{direct['p50_ms']:.3f} ms", f"{ours['p50_ms']:.3f} ms",
         f"{nginx['p50_ms']:.3f} ms", "-"),
        ("one call alone, p99", f"{direct['p99_ms']:.3f} ms", f"{ours['p99_ms']:.3f} ms",
         f"{nginx['p99_ms']:.3f} ms", "-"),
        ("added to a call, p50", "-", f"{added:+.3f} ms", f"{nginx['added_p50_ms']:+.3f} ms",
         f"target <= 1 ms: {'met' if added <= 1.0 else 'missed'}"),
        ("added to a call, p99", "-", f"{ours['added_p99_ms']:+.3f} ms",
         f"{nginx['added_p99_ms']:+.3f} ms", "-"),
        (f"throughput, 3 backends, {connections} connections", per_s("3", "direct"),
         per_s("3", "lb"), per_s("3", "nginx"), versus("3")),
        (f"throughput, 1 backend, {connections} connections", per_s("1", "direct"),
         per_s("1", "lb"), per_s("1", "nginx"), versus("1")),
        ("proxy CPU per request, 3 backends", "-", cpu("3", "lb"), cpu("3", "nginx"), "-"),
        ("proxy CPU per request, 1 backend", "-", cpu("1", "lb"), cpu("1", "nginx"), "-"),
    ]
    print()
    print(f"| measure | direct | stepflow-stream lb | nginx {figures['nginx_version']} "
          "| lb vs nginx |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    wrk_cpu = max(throughput[v][t]["wrk_cpu_us"] for v in throughput for t in ("lb", "nginx"))
    backend_cpu = throughput["3"]["direct"]["backend_cpu_us"]
    print(f"""
- one machine, {figures['cores']} cores shared by everything: wrk, the proxy and the Python \
backends (3 backends: on 127.0.0.2-4; 1 backend: the first alone); the proxies are one process \
each (nginx: 1 worker, least_conn, keepalive 128 to the upstreams, proxy_buffering off)
- one call alone: wrk, 1 connection, sequential calls for {figures['latency_seconds']} s; \
added = the per-repetition difference to direct; throughput: wrk, {connections} keep-alive \
connections, {figures['load_seconds']} s (direct: wrk's threads spread over the backends)
- wrk (C, one thread per target) used at most {wrk_cpu:.0f} us of CPU per request: not the \
bottleneck; proxy CPU = the proxy process's user+system time / requests
- a backend spends {backend_cpu:.0f} us of CPU per call: with 3 backends the 2 cores are the \
limit, and what a proxy spends per request is taken from the backends (its cost shows as lost \
throughput); with 1 backend that one process is the limit and the proxy has a core of its own \
(its cost shows as latency)""")


# --- the ingest section -----------------------------------------------------------------------

INGEST_RECORDS = 5_000
INGEST_ROUNDS = 5


def _ingest_section(args: argparse.Namespace) -> None:
    print(f"\ningest: `stepflow-stream ingest` of a 4-partition topic through a 3-step flow "
          f"(three /builtin/noop) on the distributed runtime (direct-driver agents), "
          f"{INGEST_RECORDS:,} records per round, median of {INGEST_ROUNDS} rounds", flush=True)
    if args.only is None:
        from stepflow_stream.infra import InfraError

        try:
            env = infra_env()
        except InfraError as error:  # the full run goes on without this section
            print(f"ingest section skipped: the local services did not start: {error}")
            return
    else:
        env = infra_env()
    figures = _measure(["-m", "benchmarks.ingest_side", "--records", str(INGEST_RECORDS),
                        "--rounds", str(INGEST_ROUNDS)], env=env)
    print()
    print("| measure | records/s (median) | vs client | rounds |")
    print("|---|---|---|---|")
    baseline = figures.get("client", {}).get("records_per_s")
    for name, measured in figures.items():
        rounds = ", ".join(f"{r:,.0f}" for r in measured["rounds"])
        label = ("client baseline: the same runs by submit_many" if name == "client"
                 else f"ingest, {name} driver")
        ratio = f"{measured['records_per_s'] / baseline:.2f}x" if baseline else "-"
        print(f"| {label} | {measured['records_per_s']:,.0f} | {ratio} | {rounds} |")
    print("\n- a round: the records produced to the input topic while the ingest runs, until "
          "the last result is read (read_committed) from the output topic; each result is "
          "produced with its input offset in one Kafka transaction; at most 1,000 records in "
          "flight")
    print("- the client baseline: the same cluster (a fresh deployment, the same agents) runs "
          "the same number of runs submitted at once with DistributedClient.submit_many, until "
          "the run index has them all finished: what the cluster does without the ingest")


if __name__ == "__main__":
    sys.exit(main())
