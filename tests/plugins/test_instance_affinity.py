"""Instance affinity of the stepflow HTTP plugin, against real SDK component servers.

Executes with one affinity key carry the ``Stepflow-Instance-Id`` of the instance that served
the key last, so a load balancer sends them there; when that instance is gone the key moves to
whichever answers next. The load balancer here is a small real one (round robin for new
requests, routing by the header, 503 for an instance that is gone) that records what it saw.
"""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType

import httpx
import msgspec
import pytest
import uvicorn
from component_servers import StubContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stepflow_stream.config import RetryConfig
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins.base import PluginOptions
from stepflow_stream.plugins.stepflow_http import StepflowHttpPlugin

REPO = Path(__file__).resolve().parents[2]
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INSTANCE = "stepflow-instance-id"
FAST_RETRY = RetryConfig(transport_max_retries=2, backoff_min_delay_ms=20,
                         backoff_max_delay_ms=50)


class SdkServer:
    """``serve-components affinity_components:server`` in a subprocess, with a fixed id."""

    def __init__(self, log: Path, instance_id: str, port: int = 0, *args: str) -> None:
        self.instance_id = instance_id
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepflow_stream.cli.main", "serve-components",
             "affinity_components:server", "--app-dir", str(Path(__file__).parent),
             "--port", str(port), "--instance-id", instance_id, "--log-level", "warning",
             *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 15)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.kill()
            raise RuntimeError(f"no port line; see {log}")
        self.port = int(msgspec.json.decode(line)["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Die at once, as a crashed instance does."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@pytest.fixture
def start_sdk(tmp_path: Path) -> Iterator[Callable[..., SdkServer]]:
    """Start SDK servers for one test: ``start_sdk("a")``, ``start_sdk("b", port, ...)``."""
    started: list[SdkServer] = []

    def start(instance_id: str, port: int = 0, *args: str) -> SdkServer:
        started.append(SdkServer(tmp_path / "servers.log", instance_id, port, *args))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def gone_flag(instance: str) -> JSONObject:
    return {"error": "instance unavailable", "instanceGone": True}


def gone_message(instance: str) -> JSONObject:
    return {"jsonrpc": "2.0", "id": None,
            "error": {"code": -32000, "message": f"instance {instance} is not available"}}


class Balancer:
    """A load balancer in front of SDK servers. A request without ``Stepflow-Instance-Id``
    goes to the live instances in turn; one with it goes to that instance, or gets HTTP 503
    with ``gone(instance)`` as its body when the instance is not live. ``seen`` records, per
    POST, the instance asked for and the instance that answered (or 503). Answers are read
    whole: the components used here never call back."""

    def __init__(self, gone: Callable[[str], JSONObject]) -> None:
        self.live: dict[str, str] = {}
        self.seen: list[tuple[str | None, str | int | None]] = []
        self._gone = gone
        self._turn = 0
        self._client = httpx.AsyncClient(timeout=10)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        app = Starlette(routes=[Route("/", self._post, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self._serving: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Balancer:
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            await self._serving
        await self._client.aclose()
        self._socket.close()

    async def _post(self, request: Request) -> Response:
        asked = request.headers.get(INSTANCE)
        if asked is not None and asked not in self.live:
            self.seen.append((asked, 503))
            return JSONResponse(self._gone(asked), status_code=503)
        if asked is None:
            ids = sorted(self.live)
            target = ids[self._turn % len(ids)]
            self._turn += 1
        else:
            target = asked
        forwarded = {name: value for name, value in request.headers.items()
                     if name in ("content-type", "accept", INSTANCE)}
        answer = await self._client.post(self.live[target], content=await request.body(),
                                         headers=forwarded)
        self.seen.append((asked, answer.headers.get(INSTANCE)))
        kept = {name: answer.headers[name] for name in ("content-type", INSTANCE)
                if name in answer.headers}
        return Response(answer.content, answer.status_code, headers=kept)


@pytest.fixture
async def plugin_for() -> AsyncIterator[Callable[..., StepflowHttpPlugin]]:
    """Plugins calling ``url``, stopped at the end of the test."""
    plugins: list[StepflowHttpPlugin] = []

    def make(url: str, retry: RetryConfig = FAST_RETRY, **options: int) -> StepflowHttpPlugin:
        plugins.append(StepflowHttpPlugin(PluginOptions("py", {"url": url}), retry=retry,
                                          **options))
        return plugins[-1]

    yield make
    for plugin in plugins:
        await plugin.stop()


async def echo(plugin: StepflowHttpPlugin, key: str | None, value: JSON = 1) -> JSON:
    return await plugin.execute("/echo", {"v": value}, StubContext(affinity_key=key))


# The SDK server -------------------------------------------------------------------------------


@pytest.mark.parametrize("named", ["a", "someone-else"])
async def test_a_server_addressed_directly_executes_whatever_instance_is_named(
    start_sdk: Callable[..., SdkServer], named: str
) -> None:
    """A server cannot route: an execute naming any instance runs here, and says so."""
    server = start_sdk("a")
    body = {"jsonrpc": "2.0", "id": 7, "method": "components/execute",
            "params": {"component": "/echo", "input": {"v": 1}, "attempt": 1}}
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(server.url, json=body, headers={**HEADERS, INSTANCE: named})
    assert answer.status_code == 200
    assert answer.json() == {"jsonrpc": "2.0", "id": 7, "result": {"output": {"v": 1}}}
    assert answer.headers[INSTANCE] == "a"


# Through a load balancer ----------------------------------------------------------------------


async def test_the_key_is_sent_to_the_instance_that_served_it(
    start_sdk: Callable[..., SdkServer], plugin_for: Callable[..., StepflowHttpPlugin]
) -> None:
    a, b = start_sdk("a"), start_sdk("b")
    async with Balancer(gone_flag) as balancer:
        balancer.live = {"a": a.url, "b": b.url}
        plugin = plugin_for(balancer.url)
        assert await echo(plugin, "k1", 1) == {"v": 1}
        assert await echo(plugin, "k2", 2) == {"v": 2}
        assert await echo(plugin, "k2", 3) == {"v": 3}
        assert await echo(plugin, "k1", 4) == {"v": 4}
        assert await echo(plugin, None, 5) == {"v": 5}
        assert await echo(plugin, None, 6) == {"v": 6}
    assert balancer.seen == [
        (None, "a"), (None, "b"), ("b", "b"), ("a", "a"), (None, "a"), (None, "b")
    ]
    assert (plugin.instance_for("k1"), plugin.instance_for("k2")) == ("a", "b")


@pytest.mark.parametrize("gone", [gone_flag, gone_message])
async def test_when_the_instance_is_gone_the_key_moves_to_another(
    start_sdk: Callable[..., SdkServer],
    plugin_for: Callable[..., StepflowHttpPlugin],
    gone: Callable[[str], JSONObject],
) -> None:
    a, b = start_sdk("a"), start_sdk("b")
    async with Balancer(gone) as balancer:
        balancer.live = {"a": a.url, "b": b.url}
        plugin = plugin_for(balancer.url, retry=RetryConfig(transport_max_retries=0))
        await echo(plugin, "k")
        await echo(plugin, "k")
        del balancer.live["a"]  # its health check failed
        a.kill()
        assert await echo(plugin, "k", "after") == {"v": "after"}
        await echo(plugin, "k")
    assert balancer.seen == [(None, "a"), ("a", "a"), ("a", 503), (None, "b"), ("b", "b")]
    assert plugin.instance_for("k") == "b"


# Addressing one server directly ---------------------------------------------------------------


async def test_a_server_that_replaces_another_on_its_address_takes_the_key(
    start_sdk: Callable[..., SdkServer], plugin_for: Callable[..., StepflowHttpPlugin]
) -> None:
    a = start_sdk("a")
    plugin = plugin_for(a.url)
    await echo(plugin, "k")
    assert plugin.instance_for("k") == "a"
    a.kill()
    start_sdk("b", a.port)
    assert await echo(plugin, "k", 2) == {"v": 2}
    assert plugin.instance_for("k") == "b"


async def test_an_instance_that_cannot_be_reached_is_forgotten(
    start_sdk: Callable[..., SdkServer], plugin_for: Callable[..., StepflowHttpPlugin]
) -> None:
    a = start_sdk("a")
    plugin = plugin_for(a.url)
    await echo(plugin, "k")
    a.kill()
    with pytest.raises(ComponentError) as info:
        await echo(plugin, "k")
    assert info.value.code == ErrorCode.UNREACHABLE
    assert plugin.instance_for("k") is None
    start_sdk("b", a.port)
    await echo(plugin, "k")
    assert plugin.instance_for("k") == "b"


async def test_a_busy_instance_keeps_the_key(
    start_sdk: Callable[..., SdkServer], plugin_for: Callable[..., StepflowHttpPlugin]
) -> None:
    """Its own 503 says the instance is busy, not gone: the call waits for it."""
    server = start_sdk("a", 0, "--max-concurrency", "1")
    plugin = plugin_for(server.url, retry=RetryConfig(
        transport_max_retries=100, backoff_min_delay_ms=20, backoff_max_delay_ms=20,
        backoff_type="constant"))
    await echo(plugin, "k")
    busy = asyncio.create_task(
        plugin.execute("/slow", {"seconds": 0.5}, StubContext(affinity_key="other"))
    )
    await asyncio.sleep(0.2)
    began = time.monotonic()
    assert await echo(plugin, "k", 2) == {"v": 2}
    assert time.monotonic() - began > 0.1  # it was refused while /slow ran
    assert await busy == {"seconds": 0.5}
    assert plugin.instance_for("k") == "a"


async def test_the_least_recently_used_keys_are_dropped(
    start_sdk: Callable[..., SdkServer], plugin_for: Callable[..., StepflowHttpPlugin]
) -> None:
    server = start_sdk("a")
    plugin = plugin_for(server.url, affinity_keys_kept=2)
    for key in ("k1", "k2", "k1", "k3"):
        await echo(plugin, key)
    assert [plugin.instance_for(k) for k in ("k1", "k2", "k3")] == ["a", None, "a"]
