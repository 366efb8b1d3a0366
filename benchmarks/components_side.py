"""Component servers: runs through one Python component server, and what a call adds.

``python -m benchmarks.components_side`` starts ``serve-components`` with the echo server of
``benchmarks/echo_server.py`` as a subprocess, then measures in this process:

- a batch of one-step echo runs through the embedded runtime (SQLite journal) and the
  ``stepflow`` plugin: runs/s;
- the latency of one ``components/execute`` call through the plugin, against calling the
  component's function directly in this process: the p50/p99 the protocol adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.echo_server import echo
from stepflow_stream.config import parse_config_document
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.journal.sqlite import SQLiteBlobStore, SQLiteDatabase, SQLiteJournal
from stepflow_stream.runtime.batch import run_batch
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime

REPO = Path(__file__).resolve().parent.parent


def start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "stepflow_stream.cli.main", "serve-components",
         "benchmarks.echo_server:server", "--port", "0", "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    port = json.loads(process.stdout.readline())["port"]
    return process, f"http://127.0.0.1:{port}"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class _Context:
    run_id = "bench"
    step_id = "echo"
    attempt = 1
    task_id = "bench/echo/1"
    affinity_key = None

    async def put_blob(self, data: Any, blob_type: str = "data") -> str:
        raise NotImplementedError

    async def get_blob(self, blob_id: str) -> Any:
        raise NotImplementedError

    async def evaluate_flow(self, flow: Any, input: Any) -> Any:
        raise NotImplementedError


async def measure(url: str, items: int, calls: int, concurrency: int) -> dict[str, float]:
    config = parse_config_document({
        "plugins": {"python": {"type": "stepflow", "url": url}},
        "routes": {"/python/{*component}": [{"plugin": "python"}]},
    }, "benchmark config")
    flow = parse_flow({"steps": [{"id": "echo", "component": "/python/echo",
                                  "input": {"$input": "$"}}],
                       "output": {"$step": "echo"}}, "echo flow")
    with tempfile.TemporaryDirectory(prefix="stepflow-bench-") as work:
        database = SQLiteDatabase(Path(work) / "journal.db")
        runtime = EmbeddedRuntime(config, SQLiteJournal(database), SQLiteBlobStore(database),
                                  EmbeddedOptions(max_concurrency=concurrency))
        async with runtime:
            plugin = runtime.plugins["python"]
            context = _Context()
            payload = {"text": "hello", "n": 1}
            for _ in range(200):
                await plugin.execute("/echo", payload, context)
            through_plugin = []
            for _ in range(calls):
                started = time.perf_counter()
                await plugin.execute("/echo", payload, context)
                through_plugin.append(time.perf_counter() - started)
            direct = []
            for _ in range(calls):
                started = time.perf_counter()
                await echo(payload)
                direct.append(time.perf_counter() - started)

            inputs = [{"i": i} for i in range(items)]
            async for _ in run_batch(runtime, flow, inputs[:300], max_concurrency=concurrency):
                pass
            started = time.perf_counter()
            failed = 0
            async for _, result in run_batch(runtime, flow, inputs, max_concurrency=concurrency):
                failed += not result.ok
            elapsed = time.perf_counter() - started
        database.close()
    if failed:
        raise RuntimeError(f"{failed} echo runs failed")
    return {
        "runs_per_s": items / elapsed,
        "call_p50_ms": _percentile(through_plugin, 0.5) * 1e3,
        "call_p99_ms": _percentile(through_plugin, 0.99) * 1e3,
        "direct_p50_ms": _percentile(direct, 0.5) * 1e3,
        "added_p50_ms": (_percentile(through_plugin, 0.5) - _percentile(direct, 0.5)) * 1e3,
        "added_p99_ms": (_percentile(through_plugin, 0.99) - _percentile(direct, 0.99)) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    process, url = start_server()
    try:
        figures = asyncio.run(measure(url, args.items, args.calls, args.concurrency))
    finally:
        process.terminate()
        process.wait(timeout=30)
    json.dump(figures, sys.stdout)


if __name__ == "__main__":
    main()
