"""A run's events over SSE from a real gateway (uvicorn on loopback) in front of real agents:
live, in order, resumable with Last-Event-ID exactly once, and readable with ``curl -N``."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster, serving
from httpx_sse import aconnect_sse
from starlette.applications import Starlette

from gateway.events import events_app
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import DistributedOptions, distributed_options

PLUGINS = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}
# Five steps of 150 ms: long enough for a client to be following while the run goes on.
FLOW = parse_flow_text("""
schema: https://stepflow.org/schemas/v1/flow.json
name: slow_chain
steps:
  - {id: a, component: /builtin/sleep, input: {duration_ms: 150, passthrough: 1}}
  - {id: b, component: /builtin/sleep, input: {duration_ms: 150, passthrough: {$step: a}}}
  - {id: c, component: /builtin/sleep, input: {duration_ms: 150, passthrough: {$step: b}}}
  - {id: d, component: /builtin/sleep, input: {duration_ms: 150, passthrough: {$step: c}}}
  - {id: e, component: /builtin/sleep, input: {duration_ms: 150, passthrough: {$step: d}}}
output: {$step: e}
""", "slow_chain.yaml")


def _app(options: DistributedOptions) -> Starlette:
    return events_app(options, ping_s=1)


@pytest.fixture
def cluster(cluster_factory) -> AgentsCluster:  # type: ignore[no-untyped-def]
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, driver="direct")
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    return cluster


@pytest.fixture
def options(cluster: AgentsCluster) -> DistributedOptions:
    return distributed_options(load_config(cluster.config_path, {}))


@pytest.fixture
def gateway(options: DistributedOptions) -> Iterator[str]:
    with serving(_app(options)) as url:
        yield url


async def _client(cluster: AgentsCluster) -> DistributedClient:
    config = load_config(cluster.config_path, {})
    client = DistributedClient(distributed_options(config), config)
    await client.start()
    return client


async def _follow(url: str, headers: dict[str, str] | None = None,
                  stop_after: int | None = None) -> list[tuple[int, str, str]]:
    """(id, event, data) of each SSE message, until the server closes (or ``stop_after``)."""
    received: list[tuple[int, str, str]] = []
    async with httpx.AsyncClient(timeout=30) as http, \
            aconnect_sse(http, "GET", url, headers=headers or {}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for message in source.aiter_sse():
            received.append((int(message.id), message.event, message.data))
            if stop_after is not None and len(received) >= stop_after:
                break
    return received


async def test_a_client_follows_a_run_live_to_its_end(cluster: AgentsCluster,
                                                      gateway: str) -> None:
    client = await _client(cluster)
    try:
        run_id = await client.submit(FLOW, {})
        url = f"{gateway}/api/v1/runs/{run_id}/events"
        started = time.monotonic()
        received = await _follow(url)
        await client.wait(run_id, 30)  # the projection has the run's end too
        stored = await client.journal.read(run_id)
    finally:
        await client.stop()
    # Every event once, in seq order, ending with the run's end; the run took its time, so
    # most of them came live (the stream could not have been read from the projection alone).
    assert [seq for seq, _, _ in received] == list(range(len(stored)))
    assert [kind for _, kind, _ in received] == [type(e).__name__ for e in stored]
    assert received[-1][1] == "RunCompleted"
    assert time.monotonic() - started > 0.5


async def test_a_client_that_reconnects_with_last_event_id_gets_each_event_once(
    cluster: AgentsCluster, gateway: str
) -> None:
    client = await _client(cluster)
    try:
        run_id = await client.submit(FLOW, {})
        url = f"{gateway}/api/v1/runs/{run_id}/events"
        first = await _follow(url, stop_after=4)
        await asyncio.sleep(0.3)  # events go on while the client is away
        rest = await _follow(url, headers={"Last-Event-ID": str(first[-1][0])})
        await client.wait(run_id, 30)  # the projection has the run's end too
        stored = await client.journal.read(run_id)
        since = await _follow(f"{url}?since=5")
    finally:
        await client.stop()
    seqs = [seq for seq, _, _ in first + rest]
    assert seqs == list(range(len(stored)))
    assert [seq for seq, _, _ in since] == list(range(6, len(stored)))
    # A client that has the terminal event and reconnects (as an EventSource does) is told
    # there is nothing more, so it stops; one event short, it gets that event.
    async with httpx.AsyncClient(timeout=30) as http:
        done = await http.get(url, headers={"Last-Event-ID": str(len(stored) - 1)})
        last = await http.get(url, headers={"Last-Event-ID": str(len(stored) - 2)})
    assert done.status_code == 204 and done.content == b""
    assert last.status_code == 200 and "event: RunCompleted" in last.text


async def test_curl_follows_the_stream(cluster: AgentsCluster, gateway: str) -> None:
    client = await _client(cluster)
    try:
        run_id = await client.submit(FLOW, {})
        curl = await asyncio.create_subprocess_exec(
            "curl", "-N", "-s", "--max-time", "30", f"{gateway}/api/v1/runs/{run_id}/events",
            stdout=subprocess.PIPE,
        )
        output, _ = await curl.communicate()
        await client.wait(run_id, 30)  # the projection has the run's end too
        stored = await client.journal.read(run_id)
    finally:
        await client.stop()
    ids = [int(line[3:]) for line in output.decode().splitlines() if line.startswith("id:")]
    assert ids == list(range(len(stored)))
    assert "event: RunCompleted" in output.decode()


async def test_unknown_run_and_bad_since_are_json_errors(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        unknown = await http.get(f"{gateway}/api/v1/runs/no-such-run/events")
        bad = await http.get(f"{gateway}/api/v1/runs/x/events", params={"since": "three"})
    assert unknown.status_code == 404
    assert "no-such-run" in unknown.json()["message"]
    assert bad.status_code == 400
    assert "since" in bad.json()["message"] and "'three'" in bad.json()["message"]
