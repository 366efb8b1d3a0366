"""Forwarding one request to a backend and its answer back, streamed as it arrives.

A new request goes to the least loaded healthy backend; one that carries
``Stepflow-Instance-Id`` (a callback answer, or an affine call) goes to that instance, and gets
503 with ``"instanceGone": true`` when no healthy backend reports it. A backend that refuses the
connection is marked down and the request, not sent yet, goes to another; one that breaks the
connection after the request was written to it is marked down too, and the request fails (502,
or a cut connection when part of the answer had been passed on): it may have run. Every
end-to-end header (``traceparent``, ``tracestate``, ``x-request-id``...) is passed on both
ways, untouched.

The answer is passed on as each read from the backend brings it: one write to the client per
read, so an SSE frame goes out alone as soon as it arrives, and a small JSON answer in one
piece.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.lb.backends import Backend, BackendPool
from gateway.lb.messages import HOP_BY_HOP, Request, json_answer
from gateway.lb.metrics import Metrics
from gateway.lb.upstream import UpstreamConnection

__all__ = ["INSTANCE_HEADER", "Downstream", "Exchange", "Proxy"]

log = logging.getLogger("gateway.lb")

INSTANCE_HEADER = "Stepflow-Instance-Id"
_INSTANCE = INSTANCE_HEADER.lower().encode()
# Set again for the next hop (host, length), answered here (expect), or extended (forwarded-for).
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-forwarded-for"}
_EMPTY_BODY_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
_NO_BODY_STATUSES = frozenset({204, 304})


class Downstream(Protocol):
    """The client connection an exchange answers on."""

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client."""

    def finish(self, keep_alive: bool) -> None:
        """The answer is complete: read the next request, or close when not ``keep_alive``."""

    def abort(self) -> None:
        """Cut the connection: the client sees an answer that is not whole."""


class Proxy:
    """Forwards requests to the backends of ``pool``."""

    def __init__(self, pool: BackendPool, metrics: Metrics, upstream: str) -> None:
        self.pool = pool
        self.metrics = metrics
        self.upstream = upstream

    def forward(self, request: Request, client: Downstream) -> Exchange:
        """Start passing ``request`` on; the answer goes to ``client``."""
        exchange = Exchange(self, request, client)
        exchange.route()
        return exchange

    def unavailable(self, instance: str | None, *, keep_alive: bool) -> bytes:
        if instance is not None:
            self.metrics.errors["instance_gone"] += 1
            return json_answer(503, {
                "error": f"instance {instance} of upstream {self.upstream} is gone: "
                "no healthy backend reports it",
                "instanceGone": True,
                "instanceId": instance,
            }, keep_alive=keep_alive)
        self.metrics.errors["no_backend"] += 1
        return json_answer(
            503, {"error": f"no healthy backend for upstream {self.upstream}", "retryable": True},
            ((b"retry-after", b"1"),), keep_alive=keep_alive,
        )


class Exchange:
    """One request on its way to a backend, and its answer on its way back (the
    :class:`~gateway.lb.upstream.ResponseSink` of the connection that carries it)."""

    __slots__ = ("_backend", "_chunked", "_client", "_connecting", "_connection", "_done",
                 "_head_sent", "_instance", "_keep_alive", "_out", "_proxy", "_request",
                 "_tail", "_tried")

    def __init__(self, proxy: Proxy, request: Request, client: Downstream) -> None:
        self._proxy = proxy
        self._request = request
        self._client = client
        instance = request.header(_INSTANCE)
        self._instance = instance.decode("latin-1") if instance is not None else None
        self._tail = _request_tail(request)
        self._tried: list[Backend] = []
        self._backend: Backend | None = None
        """The backend chosen, while this exchange counts in its ``in_flight``."""
        self._connection: UpstreamConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._keep_alive = request.keep_alive
        self._head_sent = False
        self._chunked = False
        self._done = False
        self._out: list[bytes] = []

    # -- choosing a backend and sending --

    def route(self) -> None:
        """Send the request to a backend, or answer 503 when there is none to send it to."""
        pool = self._proxy.pool
        backend = (pool.instance(self._instance) if self._instance is not None
                   else pool.least_loaded(self._tried))
        if backend is None:
            self._answer(self._proxy.unavailable(self._instance, keep_alive=self._keep_alive))
            return
        self._tried.append(backend)
        backend.in_flight += 1
        self._backend = backend
        connection = backend.connections.take_idle()
        if connection is not None:
            self._send(backend, connection)
        else:
            self._connecting = asyncio.get_running_loop().create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        try:
            connection = await backend.connections.acquire()
        except (OSError, TimeoutError) as exc:  # nothing was sent: another backend decides
            self._release_backend()
            self._proxy.metrics.errors["connect"] += 1
            self._proxy.pool.mark_down(backend, f"connection failed: {exc!r}")
            if not self._done:
                self.route()
            return
        except Exception as exc:
            log.exception("connecting to backend %s failed", backend.name)
            self._release_backend()
            if not self._done:
                self._answer(json_answer(502, {"error": f"the load balancer failed: {exc!r}"},
                                         keep_alive=self._keep_alive))
            return
        if self._done:  # the client went away meanwhile
            backend.connections.release(connection)
            return
        self._send(backend, connection)

    def _send(self, backend: Backend, connection: UpstreamConnection) -> None:
        self._connection = connection
        request = self._request
        connection.send(self, b"".join((
            request.method, b" ", request.target, b" HTTP/1.1\r\nhost: ", backend.host_header,
            b"\r\n", self._tail,
        )))

    # -- the answer (ResponseSink) --

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        backend = self._backend
        assert backend is not None
        self._proxy.metrics.requests[backend.key] += 1
        request = self._request
        lines = [b"HTTP/1.1 ", str(status).encode(), b" ", reason, b"\r\n"]
        dropped = _dropped(headers, HOP_BY_HOP)
        framed = False
        for name, value in headers:
            lower = name.lower()
            if lower in dropped:
                continue
            framed = framed or lower == b"content-length"
            lines += (name, b": ", value, b"\r\n")
        if not framed and request.method != b"HEAD" and status not in _NO_BODY_STATUSES:
            if request.http11:
                lines.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
            else:  # an HTTP/1.0 client learns where the body ends when the connection does
                self._keep_alive = False
        if not self._keep_alive:
            lines.append(b"connection: close\r\n")
        elif not request.http11:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self._out.append(b"".join(lines))
        self._head_sent = True
        if request.method == b"HEAD":
            # The answer has no body, but the parser would wait for the one its length names:
            # the connection cannot carry another request.
            connection = self._connection
            assert connection is not None
            connection.sink = None
            self.upstream_end(connection, reusable=False)

    def upstream_body(self, data: bytes) -> None:
        if self._chunked:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._out.append(data)

    def upstream_end(self, connection: UpstreamConnection, reusable: bool) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self._connection = None
        backend = self._backend
        self._release_backend()
        if reusable and backend is not None:
            backend.connections.release(connection)
        else:
            connection.close()
        self._finish()

    def upstream_lost(self, reason: str) -> None:
        self._connection = None
        backend = self._backend
        if self._done or backend is None:
            return
        self._proxy.metrics.errors["upstream"] += 1
        self._proxy.pool.mark_down(backend, f"request failed: {reason}")
        self._release_backend()
        if self._head_sent:
            self.flush()
            self._done = True
            self._client.abort()
            return
        self._out.clear()
        self._answer(json_answer(502, {
            "error": f"backend {backend.name} failed after the request was sent: {reason}",
            "upstreamFailed": True,
            "instanceId": backend.instance_id,
        }, keep_alive=self._keep_alive))

    def flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._client.write(data)

    # -- the client's side --

    def client_lost(self) -> None:
        """The client went away: drop the backend's connection if it is mid-answer."""
        if self._done:
            return
        self._done = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.sink = None
            connection.close()
        self._release_backend()

    def pause(self) -> None:
        """The client reads slower than the backend answers."""
        if self._connection is not None:
            self._connection.pause_reading()

    def resume(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def _answer(self, data: bytes) -> None:
        self._out.append(data)
        self._finish()

    def _finish(self) -> None:
        self.flush()
        if not self._done:
            self._done = True
            self._client.finish(self._keep_alive)

    def _release_backend(self) -> None:
        if self._backend is not None:
            self._backend.in_flight -= 1
            self._backend = None

    def __repr__(self) -> str:
        return f"Exchange({self._request!r}, backend={self._backend!r}, done={self._done})"


def _request_tail(request: Request) -> bytes:
    """The request's headers after ``host``, and its body, as the backend gets them."""
    lines: list[bytes] = []
    forwarded_for = request.client
    dropped = _dropped(request.headers, _NOT_FORWARDED)
    for name, value in request.headers:
        if name in dropped:
            if name == b"x-forwarded-for":
                forwarded_for = value + b", " + request.client
            continue
        lines += (name, b": ", value, b"\r\n")
    lines += (b"x-forwarded-for: ", forwarded_for, b"\r\n")
    if request.body or request.method not in _EMPTY_BODY_METHODS:
        lines += (b"content-length: ", str(len(request.body)).encode(), b"\r\n")
    lines += (b"\r\n", request.body)
    return b"".join(lines)


def _dropped(headers: list[tuple[bytes, bytes]], always: frozenset[bytes]) -> frozenset[bytes]:
    """``always``, and the headers a ``Connection`` header names (hop-by-hop too)."""
    for name, value in headers:
        if name.lower() == b"connection":
            return always.union(token.strip().lower() for token in value.split(b","))
    return always
