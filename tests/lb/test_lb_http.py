"""The load balancer's own HTTP/1.1 handling, against a real backend on loopback (uvicorn, in
the test's loop) and raw sockets where a client library would hide what is checked:
pipelining, HTTP/1.0, ``Expect: 100-continue``, back-pressure, clients that go away, and the
per-backend connection limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.lb import LbOptions
from gateway.lb import serving as lb_serving

ADDRESS = "127.0.0.8"
hung_up = asyncio.Event()
echoing = {"now": 0, "peak": 0}


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "healthy", "instanceId": "http-1"})


async def _echo(request: Request) -> Response:
    body = await request.body()
    echoing["now"] += 1
    echoing["peak"] = max(echoing["peak"], echoing["now"])
    await asyncio.sleep(float(request.query_params.get("sleep", 0)))
    echoing["now"] -= 1
    return JSONResponse({"length": len(body), "query": request.url.query})


async def _stream(request: Request) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(frames(), media_type="text/event-stream")


async def _big(request: Request) -> Response:
    return Response(b"x" * int(request.query_params["size"]))


async def _hang(request: Request) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.sleep(30)
        finally:
            hung_up.set()

    return StreamingResponse(frames(), media_type="text/event-stream")


BACKEND = Starlette(routes=[
    Route("/health", _health), Route("/echo", _echo, methods=["POST"]), Route("/stream", _stream),
    Route("/big", _big), Route("/hang", _hang),
])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host=ADDRESS, port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the backend did not start"
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def balanced(max_connections: int = 256) -> AsyncIterator[str]:
    """The backend, and the load balancer in front of it; yields the load balancer's URL."""
    port = _free_port()
    options = LbOptions(name=ADDRESS, port=port, max_connections=max_connections)
    async with serving(BACKEND, port), lb_serving(options) as url:
        yield url


async def _exchange(url: str, data: bytes, *, then: bytes = b"") -> bytes:
    """Send ``data`` on a raw connection (and ``then`` once something came back); everything
    read until the load balancer closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    received = b""
    if then:
        received = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(then)
    received += await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return received


async def test_pipelined_requests_are_answered_in_order() -> None:
    body = b'{"a": 1}'
    post = (b"POST /echo?n=%d HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s")
    async with balanced() as url:
        received = await _exchange(url, b"".join([
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
            post % (1, len(body), body),
            post % (2, len(body), body),
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        ]))
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [answer[:3] for answer in answers] == [b"200"] * 4
    assert b'"healthyBackends": 1' in answers[0]
    assert answers[1].endswith(b'{"length":8,"query":"n=1"}')
    assert answers[2].endswith(b'{"length":8,"query":"n=2"}')
    assert b"stepflow_lb_requests_total" in answers[3]


async def test_an_http10_client_gets_a_stream_ended_by_the_connection() -> None:
    async with balanced() as url:
        received = await _exchange(url, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    body = b"y" * 5000
    async with balanced() as url:
        received = await _exchange(
            url, b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body), then=body,
        )
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    assert received.endswith(b'{"length":5000,"query":""}')


async def test_a_chunked_request_and_a_large_answer_to_a_slow_reader_pass_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"z" * 1000

    size = 8_000_000
    async with balanced() as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        echoed = await client.post("/echo", content=chunks())
        received = 0
        async with client.stream("GET", f"/big?size={size}") as response:
            async for chunk in response.aiter_raw(256 * 1024):
                received += len(chunk)
                await asyncio.sleep(0.002)  # the load balancer's buffers fill: it must wait
    assert echoed.json()["length"] == 4000
    assert received == size


async def test_a_client_that_goes_away_frees_the_backend() -> None:
    hung_up.clear()
    async with balanced() as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("GET", "/hang") as response:
            async for line in response.aiter_lines():
                assert line == "data: first"
                break
        await asyncio.wait_for(hung_up.wait(), 5)  # the backend saw its client go
        health = (await client.get("/health")).json()
    assert health["backends"][0]["inFlight"] == 0


async def test_requests_beyond_the_connection_limit_wait_for_a_connection() -> None:
    echoing["peak"] = 0
    async with balanced(max_connections=2) as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post(f"/echo?sleep=0.05&n={n}", content=b"{}") for n in range(8)
        ))
    assert [json.loads(r.content)["query"] for r in responses] == [
        f"sleep=0.05&n={n}" for n in range(8)
    ]
    assert echoing["peak"] == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        port: int = probe.getsockname()[1]
        return port
