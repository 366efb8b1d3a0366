"""Many SSE subscribers on one gateway process, all following one run.

Starts the agents (direct driver) and a gateway process serving the run event streams, opens
``--subscribers`` streams on one run from this process, then runs a flow of 20 short steps.
Two delays per event and subscriber: ``fanout`` is the time it reached the subscriber minus the
time it became visible to a ``read_committed`` consumer of the journal in this process (the
gateway's own delay), ``delay`` the time it reached the subscriber minus the time the
orchestrator stamped on it (decision to delivery: it includes waiting for the journal
transaction to commit). Prints one JSON object.

``python -m benchmarks.sse_side --subscribers 1000``, with STEPFLOW_KAFKA_BOOTSTRAP and
STEPFLOW_POSTGRES_URL set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from starlette.applications import Starlette

from benchmarks.distributed_side import _drop_schema, _start_agents, _stop_agents, _write_config
from gateway.events import event_routes, serving_events
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.journal.postgres import PostgresDatabase

STEPS = 20
_TIMESTAMP = re.compile(rb'"timestamp":(\d+)')
_TERMINAL_TYPES = {b"RunCompleted", b"RunFailed", b"RunCancelled"}


def app() -> Starlette:
    """The gateway's event routes alone (uvicorn ``--factory``), for the config in
    ``STEPFLOW_CONFIG``."""
    options = distributed_options(load_config(Path(os.environ["STEPFLOW_CONFIG"]), os.environ))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = await PostgresDatabase.connect(options.database_url)
        async with serving_events(app.state, options, database):
            yield
        await database.close()

    return Starlette(routes=event_routes(), lifespan=lifespan)


def _flow() -> Any:
    lines = ["schema: https://stepflow.org/schemas/v1/flow.json", "name: sse_bench", "steps:",
             # The first step waits while the subscribers connect.
             "  - {id: s1, component: /builtin/sleep, input: {duration_ms: 6000}}"]
    lines += [f"  - {{id: s{i}, component: /builtin/sleep, input: {{duration_ms: 5, "
              f"passthrough: {{$step: s{i - 1}}}}}}}" for i in range(2, STEPS + 1)]
    lines.append(f"output: {{$step: s{STEPS}}}")
    return parse_flow_text("\n".join(lines) + "\n", "sse_bench.yaml")


async def _watch_commits(options: Any, run_id: str, visible: dict[int, float]) -> None:
    """When each event of the run became visible to a read_committed consumer of the journal
    (in this process): where the gateway's own delay starts."""
    consumer = AIOKafkaConsumer(bootstrap_servers=options.bootstrap_servers,
                                isolation_level="read_committed", enable_auto_commit=False,
                                fetch_max_wait_ms=5)
    await consumer.start()
    try:
        partitions = [TopicPartition(options.topics.journal, p)
                      for p in range(options.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        key = run_id.encode()
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for records in batches.values():
                for record in records:
                    if record.key == key and record.value is not None:
                        visible.setdefault(decode_event(record.value).seq, now_ms)
    finally:
        await consumer.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _measure(config_path: Path, url: str, subscribers: int) -> dict[str, Any]:
    config = load_config(config_path, os.environ)
    options = distributed_options(config)
    delays: list[float] = []
    arrivals: list[tuple[int, float]] = []
    counts: list[int] = []
    visible: dict[int, float] = {}
    async with DistributedClient(options, config) as client:
        flow = _flow()
        await client.wait(await client.submit(flow, {}), 60)  # warm-up
        run_id = await client.submit(flow, {})
        host, port = url.removeprefix("http://").split(":")
        connected = 0
        all_connected = asyncio.Event()
        live_from_ms = [float("inf")]

        async def follow() -> None:
            # A plain socket reader, not httpx: a thousand streams parsed by one Python
            # process would measure the client, not the gateway.
            nonlocal connected
            received = 0
            reader, writer = await asyncio.open_connection(host, int(port), limit=2**20)
            writer.write(f"GET /api/v1/runs/{run_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                         "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            status = await reader.readline()
            assert b" 200 " in status, status
            while (await reader.readline()).strip():
                pass  # the response headers
            connected += 1
            if connected == subscribers:
                live_from_ms[0] = time.time() * 1000
                all_connected.set()
            seq = -1
            ending = False
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line.startswith(b"id:"):
                    seq = int(line[3:])
                elif line.startswith(b"event:"):
                    ending = line[6:].strip() in _TERMINAL_TYPES
                elif line.startswith(b"data:"):
                    now_ms = time.time() * 1000
                    found = _TIMESTAMP.search(line)
                    assert found is not None, line
                    stamped = int(found.group(1))
                    if stamped > live_from_ms[0]:  # decided once everyone was listening
                        delays.append(now_ms - stamped)
                        arrivals.append((seq, now_ms))
                    received += 1
                    if ending:
                        break
            writer.close()
            counts.append(received)

        watcher = asyncio.ensure_future(_watch_commits(options, run_id, visible))
        followers = [asyncio.ensure_future(follow()) for _ in range(subscribers)]
        await asyncio.wait_for(all_connected.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*followers), 120)
        watcher.cancel()
        events = len(await client.journal.read(run_id))
    delays.sort()
    fan_out = sorted(at - visible[seq] for seq, at in arrivals if seq in visible)
    return {
        "fanout_p50_ms": statistics.median(fan_out),
        "fanout_p99_ms": fan_out[max(0, int(len(fan_out) * 0.99) - 1)],
        "subscribers": subscribers,
        "events": events,
        "delivered": sum(counts),
        "complete_streams": sum(1 for c in counts if c == events),
        "delay_p50_ms": statistics.median(delays),
        "delay_p99_ms": delays[max(0, int(len(delays) * 0.99) - 1)],
        "delay_max_ms": delays[-1],
        "client_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="stepflow-sse-bench-") as work:
        root = Path(work)
        config = _write_config(root, env)
        agents = _start_agents(root, config, "direct")
        port = _free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.sse_side:app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--backlog", "4096"],
            env={**env, "STEPFLOW_CONFIG": str(config)},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.05)
            figures = asyncio.run(_measure(config, f"http://127.0.0.1:{port}",
                                           args.subscribers))
        finally:
            gateway.terminate()
            gateway.wait(15)
            _stop_agents(agents)
            asyncio.run(_drop_schema(env["STEPFLOW_POSTGRES_URL"], config))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
