"""The plugin's HTTP/1.1 client against scripted servers on loopback sockets.

Each server reads one request head (and its Content-Length body) per turn and writes the bytes
the test gives it, so framing and failure cases are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stepflow_stream.plugins._http11 import (
    BrokenResponse,
    ConnectFailed,
    HttpClient,
    NoResponse,
)

Script = Callable[[int, int], bytes | None]
"""Given the connection's number and the request's number on it (both from 1), the bytes to
answer; None hangs up instead."""


class ScriptedServer:
    def __init__(self, script: Script, close_after: bool) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/rpc?x=1"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        number = self.connections
        turn = 0
        try:
            while True:
                turn += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script(number, turn)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[ScriptedServer] = []

    async def start(script: Script, close_after: bool = False) -> ScriptedServer:
        scripted = ScriptedServer(script, close_after)
        scripted.server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
        servers.append(scripted)
        return scripted

    yield start
    for scripted in servers:
        assert scripted.server is not None
        scripted.server.close()
        await scripted.server.wait_closed()
        # Handlers still waiting for a request would be cancelled noisily at loop shutdown.
        await asyncio.wait_for(asyncio.gather(*scripted.handlers), 2)


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


async def test_a_request_carries_target_host_and_body(scripted: Any) -> None:
    server = await scripted(lambda n, turn: ok(b"fine"))
    client = HttpClient(1.0)
    response = await client.request("POST", server.url, b'{"a":1}', {"x-test": "yes"})
    assert (response.status, await response.read()) == (200, b"fine")
    head, body = server.requests[0].split(b"\r\n\r\n")
    assert head.startswith(b"POST /rpc?x=1 HTTP/1.1\r\n")
    assert f"host: {server.url.split('/')[2]}".encode() in head
    assert b"x-test: yes" in head and b"content-length: 7" in head
    assert body == b'{"a":1}'
    await client.aclose()


async def test_connections_are_kept_alive_and_reused(scripted: Any) -> None:
    server = await scripted(lambda n, turn: ok(b"%d" % n))
    client = HttpClient(1.0)
    for _ in range(5):
        assert await (await client.request("GET", server.url)).read() == b"1"
    assert server.connections == 1
    await client.aclose()


async def test_connection_close_is_honoured(scripted: Any) -> None:
    server = await scripted(lambda n, turn: ok(b"%d" % n, "connection: close"))
    client = HttpClient(1.0)
    bodies = [await (await client.request("GET", server.url)).read() for _ in range(3)]
    assert bodies == [b"1", b"2", b"3"]
    await client.aclose()


async def test_chunked_bodies_with_extensions_and_trailers(scripted: Any) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\ntrailer: x\r\n\r\n")
    server = await scripted(lambda n, turn: chunked)
    client = HttpClient(1.0)
    assert await (await client.request("GET", server.url)).read() == b"hello, world"
    assert await (await client.request("GET", server.url)).read() == b"hello, world"
    assert server.connections == 1
    await client.aclose()


async def test_lines_arrive_across_chunk_boundaries(scripted: Any) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"8\r\ndata: ab\r\n9\r\nc\r\n\r\ndata\r\n5\r\n: d\n\n\r\n0\r\n\r\n")
    server = await scripted(lambda n, turn: chunked)
    client = HttpClient(1.0)
    response = await client.request("GET", server.url)
    assert [line async for line in response.lines()] == ["data: abc", "", "data: d", ""]
    await client.aclose()


async def test_a_body_until_the_connection_closes(scripted: Any) -> None:
    server = await scripted(lambda n, turn: b"HTTP/1.0 200 OK\r\n\r\nall of it", close_after=True)
    client = HttpClient(1.0)
    response = await client.request("GET", server.url)
    assert await response.read() == b"all of it"
    await client.aclose()


async def test_a_stale_kept_alive_connection_is_replaced_transparently(scripted: Any) -> None:
    # The server answers once per connection and hangs up when the next request comes, as one
    # that closed an idle connection just as the client sent on it.
    server = await scripted(lambda n, turn: ok(b"%d" % n) if turn == 1 else None)
    client = HttpClient(1.0)
    assert await (await client.request("GET", server.url)).read() == b"1"
    assert await (await client.request("GET", server.url)).read() == b"2"
    assert server.connections == 2
    await client.aclose()


async def test_refused_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await HttpClient(1.0).request("GET", f"http://127.0.0.1:{port}/")


async def test_hanging_up_without_an_answer_is_no_response(scripted: Any) -> None:
    server = await scripted(lambda n, turn: None)
    with pytest.raises(NoResponse):
        await HttpClient(1.0).request("POST", server.url, b"{}")
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    ],
)
async def test_cut_off_or_malformed_responses_are_broken(scripted: Any, answer: bytes) -> None:
    server = await scripted(lambda n, turn: answer, close_after=True)
    client = HttpClient(1.0)
    with pytest.raises(BrokenResponse):
        response = await client.request("GET", server.url)
        await asyncio.wait_for(response.read(), 1)
    await client.aclose()
