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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvloop
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


class _Follower(asyncio.Protocol):
    """One SSE stream read straight off its socket: the time each message arrived, and the
    orchestrator's stamp on its event. Lines are looked at only for ``id:``, ``event:`` and
    ``data:`` (uvicorn's chunk-size lines fall through)."""

    def __init__(self, request: bytes, connected: asyncio.Future[None]) -> None:
        self.request = request
        self.connected = connected
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.headers_done = False
        self.seq = -1
        self.ending = False
        self.arrivals: list[tuple[int, float, int]] = []  # (seq, received ms, stamped ms)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        self.buffer += data
        if not self.headers_done:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            assert b" 200 " in head.split(b"\r\n", 1)[0], head
            self.headers_done = True
            self.buffer = rest
            self.connected.set_result(None)
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"id:"):
                self.seq = int(line[3:])
            elif line.startswith(b"event:"):
                self.ending = line[6:].strip() in _TERMINAL_TYPES
            elif line.startswith(b"data:"):
                found = _TIMESTAMP.search(line)
                assert found is not None, line
                self.arrivals.append((self.seq, now_ms, int(found.group(1))))
                if self.ending and self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _subscribe(url: str, run_id: str, count: int) -> None:
    """Open ``count`` streams on the run, say ``connected`` on stdout once all are open, then
    print the arrivals as JSON once all have ended (a subscriber process)."""
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /api/v1/runs/{run_id}/events HTTP/1.1\r\nHost: {host}\r\n"
               "Accept: text/event-stream\r\nConnection: close\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    followers = []
    for _ in range(count):
        connected: asyncio.Future[None] = loop.create_future()
        _, follower = await loop.create_connection(
            lambda c=connected: _Follower(request, c), host, int(port))
        followers.append(follower)
    await asyncio.wait_for(asyncio.gather(*(f.connected for f in followers)), 60)
    print("connected", flush=True)
    await asyncio.wait_for(asyncio.gather(*(f.closed for f in followers)), 120)
    print(json.dumps([f.arrivals for f in followers]), flush=True)


async def _measure(config_path: Path, url: str, subscribers: int,
                   processes: int) -> dict[str, Any]:
    config = load_config(config_path, os.environ)
    options = distributed_options(config)
    visible: dict[int, float] = {}
    async with DistributedClient(options, config) as client:
        flow = _flow()
        await client.wait(await client.submit(flow, {}), 60)  # warm-up
        run_id = await client.submit(flow, {})
        watcher = asyncio.ensure_future(_watch_commits(options, run_id, visible))
        shares = [subscribers // processes + (1 if i < subscribers % processes else 0)
                  for i in range(processes)]
        readers = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.sse_side", "--subscribe", url, run_id,
            str(share), stdout=asyncio.subprocess.PIPE) for share in shares]
        for reader in readers:
            assert reader.stdout is not None
            line = await asyncio.wait_for(reader.stdout.readline(), 60)
            assert line.strip() == b"connected", line
        live_from_ms = time.time() * 1000
        streams: list[list[list[float]]] = []
        for reader in readers:
            assert reader.stdout is not None
            streams += json.loads(await asyncio.wait_for(reader.stdout.read(), 120))
            await reader.wait()
        watcher.cancel()
        events = len(await client.journal.read(run_id))
    # Only events decided once everyone was listening.
    live = [(int(seq), at, stamped) for stream in streams for seq, at, stamped in stream
            if stamped > live_from_ms]
    delays = sorted(at - stamped for _, at, stamped in live)
    fan_out = sorted(at - visible[seq] for seq, at, _ in live if seq in visible)
    return {
        "fanout_p50_ms": statistics.median(fan_out),
        "fanout_p99_ms": fan_out[max(0, int(len(fan_out) * 0.99) - 1)],
        "subscribers": subscribers,
        "subscriber_processes": processes,
        "events": events,
        "delivered": sum(len(stream) for stream in streams),
        "complete_streams": sum(1 for stream in streams if len(stream) == events),
        "delay_p50_ms": statistics.median(delays),
        "delay_p99_ms": delays[max(0, int(len(delays) * 0.99) - 1)],
        "delay_max_ms": delays[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2,
                        help="subscriber processes the streams are spread over")
    parser.add_argument("--subscribe", nargs=3, metavar=("URL", "RUN_ID", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscribe:
        url, run_id, count = args.subscribe
        uvloop.run(_subscribe(url, run_id, int(count)))
        return 0
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
                                           args.subscribers, args.processes))
        finally:
            gateway.terminate()
            gateway.wait(15)
            _stop_agents(agents)
            asyncio.run(_drop_schema(env["STEPFLOW_POSTGRES_URL"], config))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
