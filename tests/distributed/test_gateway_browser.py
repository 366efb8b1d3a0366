"""A browser follows a run of the distributed runtime over the gateway's SSE stream.

Headless Chromium (Debian's package, which ``scripts/system-packages`` installs) loads a page
from the gateway's own origin, opens an ``EventSource`` on ``/api/v1/runs/{id}/events`` and must
receive every event of the run's journal (as the PostgreSQL projection has it) once, in order,
the stream ending after the terminal event. When the connection drops mid-run, the browser's own
reconnect, which sends ``Last-Event-ID``, must go on where it stopped, without a duplicate.

One step of the flow holds until the test releases it, so the browser provably follows the run
live and the drop provably comes mid-run, without relying on timing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster, serving
from playwright.async_api import Browser, Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.events import events_app
from stepflow_stream.cli.inspect import event_json
from stepflow_stream.config import load_config
from stepflow_stream.core.events import EVENT_TYPES, TERMINAL_EVENTS, Event
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.state import RunStatus
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import DistributedOptions, distributed_options
from stepflow_stream.sdk import ComponentServer

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000
"""Longest wait for the browser to see something; only reached when the test fails."""

FLOW = parse_flow_text("""
schema: https://stepflow.org/schemas/v1/flow.json
name: held_chain
steps:
  - {id: first, component: /gate/add_one, input: {value: 1}}
  - {id: hold, component: /gate/hold, input: {value: {$step: first, path: value}}}
  - {id: third, component: /gate/add_one, input: {value: {$step: hold, path: value}}}
  - {id: last, component: /gate/add_one, input: {value: {$step: third, path: value}}}
output: {$step: last}
""", "held_chain.yaml")

# The page keeps what its EventSource does, in order, in `received`. An EventSource hands a
# message whose `event:` is a name only to the listeners of that name, so the page listens to
# every event type of the journal (and to unnamed messages, which the test would reject).
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>run events</title>
<script>
const EVENT_TYPES = %(types)s;
const TERMINAL = %(terminal)s;
window.received = [];
function follow(runId) {
  const source = new EventSource("/api/v1/runs/" + encodeURIComponent(runId) + "/events");
  let ended = false;
  const keep = (e) => {
    received.push({kind: "event", id: e.lastEventId, type: e.type, data: e.data});
    ended = ended || TERMINAL.includes(e.type);
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, keep);
  source.onmessage = keep;
  source.onopen = () => received.push({kind: "open"});
  source.onerror = () => {
    received.push({kind: "error", readyState: source.readyState, ended: ended});
    // After the run's end the server closes the stream; an EventSource would reconnect.
    if (ended) source.close();
  };
}
</script>
"""


class Value(msgspec.Struct):
    value: int


def _components(released: threading.Event) -> ComponentServer:
    """``add_one``, and ``hold``, which answers once ``released`` is set."""
    server = ComponentServer("gate")

    @server.component(name="add_one", description="value + 1")
    async def add_one(input: Value) -> Value:
        return Value(input.value + 1)

    @server.component(name="hold", description="value, once the test releases it")
    async def hold(input: Value) -> Value:
        while not released.is_set():
            await asyncio.sleep(0.02)
        return input

    return server


class _EventRequests:
    """ASGI middleware noting the ``Last-Event-ID`` of each request for a run's events: what
    the browser sent each time it (re)connected (None when it sent none)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_event_ids: list[str | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/events"):
            header = dict(scope["headers"]).get(b"last-event-id")
            self.last_event_ids.append(None if header is None else header.decode())
        await self.app(scope, receive, send)


@dataclass
class Gateway:
    url: str
    requests: _EventRequests


def _app(options: DistributedOptions) -> Starlette:
    page = PAGE % {
        "types": json.dumps([kind.__name__ for kind in EVENT_TYPES]),
        "terminal": json.dumps([kind.__name__ for kind in TERMINAL_EVENTS]),
    }

    async def page_html(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return events_app(options, ping_s=1, extra_routes=[Route("/page.html", page_html)])


@dataclass
class TcpProxy:
    """A TCP proxy on loopback in front of the gateway; :meth:`drop` cuts every connection
    through it at once, as a network failure would (the browser sees a reset)."""

    upstream_port: int
    _connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(
        default_factory=set)
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def drop(self) -> None:
        for client, upstream in list(self._connections):
            client.transport.abort()
            upstream.transport.abort()

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1",
                                                                  self.upstream_port)
        pair = (client, upstream)
        self._connections.add(pair)
        try:
            await asyncio.gather(_pump(client_reader, upstream), _pump(upstream_reader, client),
                                 return_exceptions=True)
        finally:
            self._connections.discard(pair)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # a test that failed early must not leave the held step waiting


@pytest.fixture
def components(released: threading.Event) -> Iterator[str]:
    with serving(_components(released).asgi_app()) as url:
        yield url


@pytest.fixture
def cluster(cluster_factory, components: str) -> AgentsCluster:  # type: ignore[no-untyped-def]
    cluster: AgentsCluster = cluster_factory(plugins_document={
        "plugins": {"gate": {"type": "stepflow", "url": components}},
        "routes": {"/gate/{*component}": [{"plugin": "gate"}]},
    }, driver="direct")
    cluster.start_all([ORCHESTRATOR, "worker:gate"])
    return cluster


@pytest.fixture
def gateway(cluster: AgentsCluster) -> Iterator[Gateway]:
    options = distributed_options(load_config(cluster.config_path, {}))
    requests = _EventRequests(_app(options))
    with serving(requests) as url:
        yield Gateway(url, requests)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # No skip: a machine without Chromium fails here, with what to run.
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/system-packages"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def _client(cluster: AgentsCluster) -> DistributedClient:
    config = load_config(cluster.config_path, {})
    client = DistributedClient(distributed_options(config), config)
    await client.start()
    return client


async def _wait_for(page: Page, condition: str) -> None:
    """Wait until the JavaScript ``condition`` on ``received`` holds."""
    await page.wait_for_function(condition, polling=50, timeout=WAIT_MS)


async def _received(page: Page) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = await page.evaluate("received")
    return received


HOLD_STARTED = ("received.some(e => e.kind === 'event' && e.type === 'StepStarted'"
                " && JSON.parse(e.data).step_id === 'hold')")
STREAM_ENDED = "received.some(e => e.kind === 'error' && e.ended)"


async def _follow_until_held(page: Page, client: DistributedClient) -> str:
    """Submit the run, have the page follow it, and wait until the browser has seen the held
    step start; the run is then still going, whatever the timing."""
    run_id = await client.submit(FLOW, {})
    await page.evaluate("(runId) => follow(runId)", run_id)
    await _wait_for(page, HOLD_STARTED)
    seen = [m for m in await _received(page) if m["kind"] == "event"]
    projected = await _projected(client, run_id, len(seen))
    assert not any(isinstance(e, TERMINAL_EVENTS) for e in projected)
    summary = await client.journal.get_run(run_id)
    assert summary is not None and summary.status is RunStatus.RUNNING
    return run_id


async def _projected(client: DistributedClient, run_id: str, count: int) -> list[Event]:
    """The run's events in the PostgreSQL projection, once it has ``count`` of them: it is
    written just after the Kafka commit that the stream reads, so it may lag a little."""
    for _ in range(WAIT_MS // 20):
        events = await client.journal.read(run_id)
        if len(events) >= count:
            return events
        await asyncio.sleep(0.02)
    raise AssertionError(f"the projection of run {run_id} has not reached {count} events")


def _assert_the_journal(messages: list[dict[str, Any]], stored: list[Event]) -> None:
    """The browser's messages are the journal: seqs 0..n-1 in order, so each event exactly
    once, with its type and its JSON."""
    assert [int(m["id"]) for m in messages] == list(range(len(stored)))
    assert [m["type"] for m in messages] == [type(e).__name__ for e in stored]
    assert [json.loads(m["data"]) for m in messages] == [
        json.loads(json.dumps(event_json(e))) for e in stored]
    assert isinstance(stored[-1], TERMINAL_EVENTS)


async def test_a_browser_follows_a_run_live_to_its_end(
    cluster: AgentsCluster, gateway: Gateway, browser: Browser, released: threading.Event
) -> None:
    client = await _client(cluster)
    try:
        page = await browser.new_page()
        await page.goto(f"{gateway.url}/page.html")
        run_id = await _follow_until_held(page, client)
        released.set()
        await _wait_for(page, STREAM_ENDED)
        await client.wait(run_id, 30)  # the projection has the run's end too
        stored = await client.journal.read(run_id)
    finally:
        await client.stop()
    received = await _received(page)
    # One connection, that the server closed after the run's terminal event: the browser saw
    # it end (and would have reconnected, readyState CONNECTING, had the page not closed it).
    assert gateway.requests.last_event_ids == [None]
    assert received[0] == {"kind": "open"}
    assert received[-1] == {"kind": "error", "readyState": 0, "ended": True}
    messages = received[1:-1]
    assert all(m["kind"] == "event" for m in messages)
    _assert_the_journal(messages, stored)
    assert messages[-1]["type"] == "RunCompleted"


async def test_a_browser_reconnects_after_a_drop_without_a_duplicate(
    cluster: AgentsCluster, gateway: Gateway, browser: Browser, released: threading.Event
) -> None:
    proxy = TcpProxy(int(gateway.url.rsplit(":", 1)[1]))
    client = await _client(cluster)
    try:
        page = await browser.new_page()
        await page.goto(f"{await proxy.start()}/page.html")
        run_id = await _follow_until_held(page, client)
        before = await _received(page)
        proxy.drop()
        # The browser sees the connection fail and, after its reconnection delay, opens it
        # again by itself, with the id of the last event it had; only then does the run go on,
        # so the rest of it comes live over the new connection.
        await _wait_for(page, "received.filter(e => e.kind === 'open').length === 2")
        released.set()
        await _wait_for(page, STREAM_ENDED)
        await client.wait(run_id, 30)  # the projection has the run's end too
        stored = await client.journal.read(run_id)
    finally:
        await client.stop()
        await proxy.stop()
    received = await _received(page)
    assert received[:len(before)] == before
    drop = len(before)
    assert received[drop] == {"kind": "error", "readyState": 0, "ended": False}
    assert received[drop + 1] == {"kind": "open"}
    assert received[-1] == {"kind": "error", "readyState": 0, "ended": True}
    assert gateway.requests.last_event_ids == [None, before[-1]["id"]]
    first = [m for m in before if m["kind"] == "event"]
    rest = received[drop + 2:-1]
    assert rest and all(m["kind"] == "event" for m in rest)
    _assert_the_journal(first + rest, stored)
