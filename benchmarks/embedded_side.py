"""The embedded runtime's side of the benchmark: SQLite journal (WAL, synchronous=FULL).

Each measurement runs in its own process (``python -m benchmarks.embedded_side NAME``) so that
peak memory is that of the measurement alone; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stepflow_stream.config import default_config
from stepflow_stream.core.flow import Flow, parse_flow
from stepflow_stream.journal.sqlite import SQLiteBlobStore, SQLiteDatabase, SQLiteJournal
from stepflow_stream.runtime.batch import run_batch
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime


def chain_flow(length: int) -> Flow:
    steps: list[dict[str, Any]] = [{"id": "s0", "component": "/builtin/noop", "input": {}}]
    steps += [
        {"id": f"s{i}", "component": "/builtin/noop", "input": {"prev": {"$step": f"s{i - 1}"}}}
        for i in range(1, length)
    ]
    return parse_flow({"steps": steps, "output": {"$step": f"s{length - 1}"}}, f"chain{length}")


def fanout_flow(width: int) -> Flow:
    steps = [{"id": f"s{i}", "component": "/builtin/noop", "input": {"i": i}}
             for i in range(width)]
    output = [{"$step": f"s{i}"} for i in range(width)]
    return parse_flow({"steps": steps, "output": output}, f"fanout{width}")


class _Runtime:
    """An embedded runtime over a fresh SQLite journal in a temporary directory."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="stepflow-bench-")
        self.database = SQLiteDatabase(Path(self._dir.name) / "journal.db")
        self.journal = SQLiteJournal(self.database)
        self.runtime = EmbeddedRuntime(default_config(), self.journal,
                                       SQLiteBlobStore(self.database),
                                       EmbeddedOptions(max_concurrency=1024))

    async def __aenter__(self) -> EmbeddedRuntime:
        await self.runtime.start()
        return self.runtime

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()
        self.database.close()
        self._dir.cleanup()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


async def measure_batch(items: int, concurrency: int) -> dict[str, float]:
    flow = chain_flow(1)
    inputs = [{"i": i} for i in range(items)]
    async with _Runtime() as runtime:
        async for _ in run_batch(runtime, flow, inputs[:500], max_concurrency=concurrency):
            pass
        started = time.perf_counter()
        failed = 0
        async for _, result in run_batch(runtime, flow, inputs, max_concurrency=concurrency):
            failed += not result.ok
        elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{failed} runs failed")
    return {"runs_per_s": items / elapsed, "peak_rss_mb": _peak_rss_mb()}


async def measure_alone(flow: Flow, runs: int) -> dict[str, float]:
    """Latency of runs submitted one at a time, each waited for before the next."""
    async with _Runtime() as runtime:
        for _ in range(20):
            await runtime.run(flow, {})
        latencies = []
        for _ in range(runs):
            started = time.perf_counter()
            _, result = await runtime.run(flow, {})
            latencies.append(time.perf_counter() - started)
            if not result.ok:
                raise RuntimeError(f"run failed: {result}")
    latencies.sort()
    return {
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "steps": len(flow.steps),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("measure", choices=["batch", "chain10", "chain100", "fanout100"])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    if args.measure == "batch":
        figures = asyncio.run(measure_batch(args.items, args.concurrency))
    elif args.measure == "chain10":
        figures = asyncio.run(measure_alone(chain_flow(10), args.runs))
    elif args.measure == "chain100":
        figures = asyncio.run(measure_alone(chain_flow(100), max(args.runs // 3, 30)))
    else:
        figures = asyncio.run(measure_alone(fanout_flow(100), max(args.runs // 3, 30)))
    json.dump(figures, sys.stdout)


if __name__ == "__main__":
    main()
