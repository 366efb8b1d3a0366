"""Forwarding one request to a backend and its answer back, streamed as it arrives.

A new request goes to the least loaded healthy backend; one that carries
``Stepflow-Instance-Id`` (a callback answer, or an affine call) goes to that instance, and gets
503 with ``"instanceGone": true`` when no healthy backend reports it. A backend that refuses the
connection is marked down and the request, not sent yet, goes to another. Every end-to-end
header (``traceparent``, ``tracestate``, ``x-request-id``...) is forwarded both ways.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.lb.backends import Backend, BackendPool
from gateway.lb.metrics import Metrics

__all__ = ["INSTANCE_HEADER", "Proxy"]


INSTANCE_HEADER = "Stepflow-Instance-Id"

# Headers of one connection, not of the message (RFC 9110 7.6.1), and those httpx and uvicorn
# set again for the next hop.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


class Proxy:
    """Forwards requests to the backends of ``pool`` (:meth:`forward` is a Starlette endpoint)."""

    def __init__(self, pool: BackendPool, metrics: Metrics, upstream: str) -> None:
        self._pool = pool
        self._metrics = metrics
        self._upstream = upstream

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = [
            (name, value) for name, value in request.headers.items()
            if name not in _HOP_BY_HOP
        ]
        if request.client is not None:
            headers.append(("x-forwarded-for", request.client.host))
        instance = request.headers.get(INSTANCE_HEADER)
        tried: list[Backend] = []
        while True:
            backend = (
                self._pool.instance(instance) if instance is not None
                else self._pool.least_loaded(tried)
            )
            if backend is None:
                return self._unavailable(instance)
            tried.append(backend)
            upstream_request = backend.client.build_request(
                request.method, request.url.path, params=request.url.query,
                headers=headers, content=body,
            )
            backend.in_flight += 1
            try:
                answer = await backend.client.send(upstream_request, stream=True)
            except _NOT_SENT as exc:
                backend.in_flight -= 1
                self._metrics.errors["connect"] += 1
                self._pool.mark_down(backend, f"connection failed: {exc!r}")
                continue  # nothing was sent: another backend (or none left) decides
            except httpx.TransportError as exc:
                backend.in_flight -= 1
                self._metrics.errors["upstream"] += 1
                self._pool.mark_down(backend, f"request failed: {exc!r}")
                return _failed_after_sending(backend, exc)
            self._metrics.requests[backend.name, backend.instance_id] += 1
            return _Relay(answer, on_close=functools.partial(_release, backend))

    def _unavailable(self, instance: str | None) -> Response:
        if instance is not None:
            self._metrics.errors["instance_gone"] += 1
            return JSONResponse(
                {
                    "error": f"instance {instance} of upstream {self._upstream} is gone: "
                    "no healthy backend reports it",
                    "instanceGone": True,
                    "instanceId": instance,
                },
                status_code=503,
            )
        self._metrics.errors["no_backend"] += 1
        return JSONResponse(
            {"error": f"no healthy backend for upstream {self._upstream}", "retryable": True},
            status_code=503,
            headers={"Retry-After": "1"},
        )


def _release(backend: Backend) -> None:
    backend.in_flight -= 1


def _failed_after_sending(backend: Backend, exc: httpx.TransportError) -> Response:
    return JSONResponse(
        {
            "error": f"backend {backend.name} failed after the request was sent: {exc!r}",
            "upstreamFailed": True,
            "instanceId": backend.instance_id,
        },
        status_code=502,
    )


class _Relay(StreamingResponse):
    """A backend's answer, each chunk passed on as it arrives (SSE frames are not held back).
    Closes the upstream response and calls ``on_close`` however it ends, even when the client
    goes away before the first chunk."""

    def __init__(self, answer: httpx.Response, *, on_close: Callable[[], None]) -> None:
        super().__init__(_chunks(answer), status_code=answer.status_code)
        self.raw_headers = [
            (name.lower(), value) for name, value in answer.headers.raw
            if name.lower().decode("latin-1") not in _HOP_BY_HOP - {"content-length"}
        ]
        self._answer = answer
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            await self._answer.aclose()


async def _chunks(answer: httpx.Response) -> AsyncIterator[bytes]:
    # A backend that dies mid-answer raises here: the client's connection is then cut, so it
    # sees a broken answer rather than a short one that looks whole.
    async for chunk in answer.aiter_raw():
        yield chunk
