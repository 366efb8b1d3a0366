"""What headers the load balancer passes on, against a real backend on loopback that echoes the
headers it got (served by uvicorn in the test's loop, as is the load balancer's app)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.lb import LbOptions
from gateway.lb import serving as lb_serving

ADDRESS = "127.0.0.5"


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "healthy", "instanceId": "echo-1"})


async def _echo(request: Request) -> Response:
    return JSONResponse(
        {"headers": dict(request.headers), "path": request.url.path, "query": request.url.query,
         "body": (await request.body()).decode()},
        headers={"Stepflow-Instance-Id": "echo-1", "traceparent": request.headers.get(
            "traceparent", "")},
    )


ECHO = Starlette(routes=[
    Route("/health", _health, methods=["GET"]),
    Route("/{path:path}", _echo, methods=["GET", "POST"]),
])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, host: str, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                           lifespan="auto"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def test_end_to_end_headers_pass_both_ways_and_hop_by_hop_ones_do_not() -> None:
    port = _free_port(ADDRESS)
    options = LbOptions(name=ADDRESS, port=port, interval_s=0.2)
    async with serving(ECHO, ADDRESS, port), lb_serving(options, "127.0.0.1", 0) as lb:
        sent = {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=1",
            "x-request-id": "req-42",
            "baggage": "user=7",
            "authorization": "Bearer token",
            "content-type": "application/json",
            "keep-alive": "timeout=99",
        }
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(lb + "/some/path?x=1", content=b'{"a": 1}',
                                         headers=sent)
    assert response.status_code == 200
    echoed = response.json()
    for name in ("traceparent", "tracestate", "x-request-id", "baggage", "authorization",
                 "content-type"):
        assert echoed["headers"][name] == sent[name]
    assert "keep-alive" not in echoed["headers"]
    assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echoed["headers"]["host"] == f"{ADDRESS}:{port}"
    assert (echoed["path"], echoed["query"], echoed["body"]) == ("/some/path", "x=1", '{"a": 1}')
    assert response.headers["stepflow-instance-id"] == "echo-1"
    assert response.headers["traceparent"] == sent["traceparent"]


async def test_no_backend_gets_503_retryable() -> None:
    port = _free_port(ADDRESS)  # nothing listens there
    options = LbOptions(name=ADDRESS, port=port, interval_s=0.2)
    async with lb_serving(options, "127.0.0.1", 0) as lb, httpx.AsyncClient() as client:
        health = await client.get(lb + "/health")
        response = await client.post(lb + "/", content=b"{}")
    assert health.status_code == 503
    assert health.json()["healthyBackends"] == 0
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["retryable"] is True
