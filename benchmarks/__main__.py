"""``python -m benchmarks`` (or ``./benchmarks/run``): the figures the issues ask for, with the
baselines measured in the same run on the same machine.

Each measurement runs in a fresh process so that peak memory is its own. Figures are medians
(p50) of repeated runs, and the table shows ratios against the baseline measured alongside:
the machines are shared and noisy, absolute numbers move from run to run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

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


def _measure(args: list[str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(args)} failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _embedded(measure: str, items: int, runs: int) -> dict[str, Any]:
    return _measure(["-m", "benchmarks.embedded_side", measure, "--items", str(items),
                     "--runs", str(runs)])


def _dbos(items: int, runs: int) -> dict[str, Any] | None:
    from benchmarks.dbos_side import dbos_available

    if not dbos_available():
        return None
    return _measure(["-c", _DBOS_SNIPPET, str(items), str(runs)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stepflow-stream benchmarks")
    parser.add_argument("--items", type=int, default=10_000, help="runs in the batch")
    parser.add_argument("--runs", type=int, default=300, help="runs of the 10-step chain")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS baseline")
    parser.add_argument("--only", choices=["embedded", "components"],
                        help="one section only (default: all)")
    args = parser.parse_args(argv)
    if args.only in (None, "embedded"):
        _embedded_section(args)
    if args.only in (None, "components"):
        _components_section(args)
    return 0


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
    if dbos:
        baseline = f"DBOS {dbos['version']}"
    else:
        baseline = "DBOS (skipped)" if args.no_dbos else "DBOS (not installed)"
    print()
    print(f"| measure | stepflow-stream | {baseline} (SQLite) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
