"""Many SSE subscribers on one gateway process, all following one run.

Starts the agents (direct driver); then, ``--reps`` times, a fresh gateway process serving the
run event streams, ``--subscribers`` streams on one run from ``--processes`` subscriber
processes, and a flow of 20 short steps. Per event and subscriber: ``fanout`` is the time it
reached the subscriber minus the time it became visible to a ``read_committed`` consumer of
the journal in this process (the gateway's own delay), ``delay`` the time it reached the
subscriber minus the time the orchestrator stamped on it (decision to delivery: it includes
waiting for the journal transaction to commit). ``cpu_us_per_message`` is the gateway
process's CPU time (user + system, from ``/proc``) from the moment all streams were open to the
last message's arrival, divided by the SSE messages it sent then (``cpu_us_per_send``: by its
writes): the figures a busy machine disturbs least. ``cpu_us_per_stream_end`` is its CPU time
from then until every stream had ended, per stream; ``idle_cpu_pct`` its CPU use with no
stream open. Prints one JSON object with the medians over the repetitions.

``--compare MODULE`` measures a second implementation of the routes in the same script run,
the two taking turns (A B, B A, ...), so both see the same machine load; ``--profile DIR``
records each gateway with py-spy.

``python -m benchmarks.sse_side --subscribers 1000``, with STEPFLOW_KAFKA_BOOTSTRAP and
STEPFLOW_POSTGRES_URL set.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from starlette.applications import Starlette

from benchmarks.distributed_side import _drop_deployment, _start_agents, _stop_agents, _write_config
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.journal.codec import decode_event

STEPS = 20
_TIMESTAMP = re.compile(rb'"timestamp":(\d+)')
_CHUNK_SIZE = re.compile(rb"[0-9a-f]+\r")
_ROUTES = "gateway.events"


def app() -> Starlette:
    """The gateway's event routes alone (uvicorn ``--factory``), for the config in
    ``STEPFLOW_CONFIG``, from the module ``STEPFLOW_SSE_ROUTES`` names (``gateway.events``)."""
    options = distributed_options(load_config(Path(os.environ["STEPFLOW_CONFIG"]), os.environ))
    routes = importlib.import_module(os.environ.get("STEPFLOW_SSE_ROUTES", _ROUTES))
    events_app: Starlette = routes.events_app(options)
    return events_app


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
    """One SSE stream read straight off its socket. While the stream is live it only keeps what
    came and when (so that the subscribers' own work delays the gateway's sends as little as
    it can); :meth:`arrivals` parses it afterwards. The gateway closes the connection after the
    run's end (the request says ``Connection: close``)."""

    def __init__(self, request: bytes, connected: asyncio.Future[None]) -> None:
        self.request = request
        self.connected = connected
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.pieces: list[tuple[float, bytes]] = []  # (received ms, bytes) after the headers

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        if self.connected.done():
            self.pieces.append((now_ms, data))
            return
        self.head += data
        head, found, rest = self.head.partition(b"\r\n\r\n")
        if found:
            assert b" 200 " in head.split(b"\r\n", 1)[0], head
            self.connected.set_result(None)
            self.pieces.append((now_ms, rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def arrivals(self) -> tuple[list[tuple[int, float, int]], list[float]]:
        """(seq, received ms, stamped ms) of each message, by the time its ``data:`` line
        came; and the time of each chunk (uvicorn's chunk-size lines: one per send)."""
        arrivals: list[tuple[int, float, int]] = []
        chunks: list[float] = []
        seq = -1
        buffer = b""
        for now_ms, data in self.pieces:
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                if line.startswith(b"id:"):
                    seq = int(line[3:])
                elif line.startswith(b"data:"):
                    stamp = _TIMESTAMP.search(line)
                    assert stamp is not None, line
                    arrivals.append((seq, now_ms, int(stamp.group(1))))
                elif _CHUNK_SIZE.fullmatch(line):
                    chunks.append(now_ms)
        return arrivals, chunks


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
            functools.partial(_Follower, request, connected), host, int(port))
        followers.append(follower)
    await asyncio.wait_for(asyncio.gather(*(f.connected for f in followers)), 60)
    print("connected", flush=True)
    await asyncio.wait_for(asyncio.gather(*(f.closed for f in followers)), 120)
    print(json.dumps([f.arrivals() for f in followers]), flush=True)


def _cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sample_cpu(pid: int, samples: list[tuple[float, float]]) -> None:
    """(time ms, CPU seconds) of the process every few milliseconds, until cancelled."""
    while True:
        samples.append((time.time() * 1000, _cpu_seconds(pid)))
        await asyncio.sleep(0.005)


def _cpu_at(samples: list[tuple[float, float]], at_ms: float) -> float:
    return max((cpu for when, cpu in samples if when <= at_ms), default=samples[0][1])


def _percentile(values: list[float], fraction: float) -> float:
    return values[max(0, int(len(values) * fraction) - 1)]


async def _start_gateway(config: Path, routes: str) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "--factory", "benchmarks.sse_side:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--backlog", "4096",
        env={**os.environ, "STEPFLOW_CONFIG": str(config), "STEPFLOW_SSE_ROUTES": routes},
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return gateway, f"http://127.0.0.1:{port}"
        if time.monotonic() > deadline or gateway.returncode is not None:
            raise SystemExit("the gateway did not start")
        await asyncio.sleep(0.05)


async def _stop_gateway(gateway: asyncio.subprocess.Process) -> None:
    if gateway.returncode is None:
        gateway.terminate()
    try:
        await asyncio.wait_for(gateway.wait(), 15)
    except TimeoutError:
        gateway.kill()
        await gateway.wait()


async def _measure_run(client: DistributedClient, options: Any, flow: Any, url: str,
                       gateway_pid: int, subscribers: int, processes: int,
                       profile: Path | None) -> dict[str, Any]:
    """One run followed by ``subscribers`` streams on the gateway at ``url``."""
    idle_from = _cpu_seconds(gateway_pid)
    await asyncio.sleep(1.0)
    idle_cpu = _cpu_seconds(gateway_pid) - idle_from
    visible: dict[int, float] = {}
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
    spy = None
    if profile is not None:
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(gateway_pid),
            "--format", "raw", "--rate", "1000", "--nonblocking", "--output", str(profile),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    cpu_samples: list[tuple[float, float]] = []
    sampler = asyncio.ensure_future(_sample_cpu(gateway_pid, cpu_samples))
    await asyncio.sleep(0)
    live_from_ms = time.time() * 1000
    streams: list[list[list[float]]] = []
    chunks: list[list[float]] = []
    for reader in readers:
        assert reader.stdout is not None
        for arrivals, chunk_times in json.loads(await asyncio.wait_for(reader.stdout.read(),
                                                                       120)):
            streams.append(arrivals)
            chunks.append(chunk_times)
        await reader.wait()
    sampler.cancel()
    cpu_end = _cpu_seconds(gateway_pid)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
    watcher.cancel()
    events = len(await client.journal.read(run_id))
    # Only events decided once everyone was listening.
    live = [(int(seq), at, stamped) for stream in streams for seq, at, stamped in stream
            if stamped > live_from_ms]
    delays = sorted(at - stamped for _, at, stamped in live)
    fan_out = sorted(at - visible[seq] for seq, at, _ in live if seq in visible)
    # The gateway's CPU time from the moment all were listening to the last message's arrival
    # (sending), then to the last stream's end (closing: sse-starlette's tasks, the sockets).
    sent = sum(1 for stream in streams for _, at, _ in stream if at >= live_from_ms)
    sends = sum(1 for times in chunks for at in times if at >= live_from_ms)
    last_ms = max(at for stream in streams for _, at, _ in stream)
    sending = _cpu_at(cpu_samples, last_ms) - cpu_samples[0][1]
    closing = cpu_end - _cpu_at(cpu_samples, last_ms)
    return {
        "fanout_p50_ms": statistics.median(fan_out),
        "fanout_p99_ms": _percentile(fan_out, 0.99),
        "delay_p50_ms": statistics.median(delays),
        "delay_p99_ms": _percentile(delays, 0.99),
        "delay_max_ms": delays[-1],
        "cpu_us_per_message": sending * 1e6 / max(sent, 1),
        "cpu_us_per_send": sending * 1e6 / max(sends, 1),
        "cpu_us_per_stream_end": closing * 1e6 / max(len(streams), 1),
        "idle_cpu_pct": idle_cpu * 100,
        "sends_per_stream": sends / max(len(chunks), 1),
        "events": events,
        "delivered": sum(len(stream) for stream in streams),
        "complete_streams": sum(1 for stream in streams if len(stream) == events),
    }


_MEDIANS = ("fanout_p50_ms", "fanout_p99_ms", "delay_p50_ms", "delay_p99_ms", "delay_max_ms",
            "cpu_us_per_message", "cpu_us_per_send", "cpu_us_per_stream_end", "idle_cpu_pct",
            "sends_per_stream")


def _summary(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions; the stream counts of the worst one."""
    summary: dict[str, Any] = {key: statistics.median(rep[key] for rep in reps)
                               for key in _MEDIANS}
    worst = min(reps, key=lambda rep: rep["complete_streams"])
    summary.update(events=worst["events"], delivered=worst["delivered"],
                   complete_streams=worst["complete_streams"], reps=reps)
    return summary


async def _measure(config_path: Path, variants: list[str], reps: int, subscribers: int,
                   processes: int, profile: Path | None) -> dict[str, Any]:
    """``reps`` runs per variant (a module serving the routes), the variants taking turns in
    alternating order, each run on a fresh gateway process, all on the same agents."""
    config = load_config(config_path, os.environ)
    options = distributed_options(config)
    figures: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    async with DistributedClient(options, config) as client:
        flow = _flow()
        await client.wait(await client.submit(flow, {}), 60)  # warm-up
        for rep in range(reps):
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                gateway, url = await _start_gateway(config_path, variant)
                try:
                    out = None if profile is None else profile / f"{variant}-{rep}.txt"
                    figures[variant].append(await _measure_run(
                        client, options, flow, url, gateway.pid, subscribers, processes, out))
                finally:
                    await _stop_gateway(gateway)
                print(variant, json.dumps({k: round(v, 1) for k, v in
                                           figures[variant][-1].items()}),
                      file=sys.stderr, flush=True)
    result = {"subscribers": subscribers, "subscriber_processes": processes, "repetitions": reps,
              **_summary(figures[variants[0]])}
    if len(variants) > 1:
        result["variants"] = {variant: _summary(figures[variant]) for variant in variants}
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2,
                        help="subscriber processes the streams are spread over")
    parser.add_argument("--reps", type=int, default=3,
                        help="measured runs (per variant); medians are reported")
    parser.add_argument("--compare", action="append", default=[], metavar="MODULE",
                        help="also measure the routes of MODULE (its event_routes and "
                        "serving_events, e.g. a saved copy of gateway/events.py on PYTHONPATH), "
                        "taking turns with gateway.events")
    parser.add_argument("--transaction-max-ms", type=int, metavar="MS",
                        help="the runtime's transactionMaxMs (default: the project's default)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the gateway during each measured run into DIR "
                        "(raw collapsed stacks); it costs the gateway CPU")
    parser.add_argument("--subscribe", nargs=3, metavar=("URL", "RUN_ID", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscribe:
        url, run_id, count = args.subscribe
        uvloop.run(_subscribe(url, run_id, int(count)))
        return 0
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="stepflow-sse-bench-") as work:
        root = Path(work)
        config = _write_config(root, env)
        if args.transaction_max_ms is not None:
            document = json.loads(config.read_text())
            document["runtime"]["transactionMaxMs"] = args.transaction_max_ms
            config.write_text(json.dumps(document))
        agents = _start_agents(root, config, "direct")
        try:
            figures = asyncio.run(_measure(config, [_ROUTES, *args.compare], args.reps,
                                           args.subscribers, args.processes, args.profile))
        finally:
            _stop_agents(agents)
            asyncio.run(_drop_deployment(env, config))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
