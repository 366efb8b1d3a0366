"""Connections to one backend: HTTP/1.1 keep-alive connections, parsed with httptools, kept in
a pool between requests.

A request taken by an idle pooled connection is written at once, with no task and no await;
only opening a new connection waits. An idle connection is not reused when its backend has
closed it (seen by the event loop, or readable when taken: only an end of file can be) or when
it has been idle long enough that the backend may be closing it right now.
"""

from __future__ import annotations

import asyncio
import collections
import select
from typing import Protocol, cast

import httptools

__all__ = ["ConnectionPool", "ResponseSink", "UpstreamConnection"]

IDLE_EXPIRY_S = 4.0
"""How long an idle connection is kept: less than uvicorn's 5 s keep-alive, so that the backend
does not close a connection the load balancer is writing a request on."""


class ResponseSink(Protocol):
    """Where a connection sends the answer to the request written on it."""

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The status line and headers have arrived (not for 1xx answers)."""

    def upstream_body(self, data: bytes) -> None:
        """A piece of the body (de-chunked), as it arrived."""

    def upstream_end(self, connection: UpstreamConnection, reusable: bool) -> None:
        """The answer is complete; ``connection`` is no longer this sink's."""

    def upstream_lost(self, reason: str) -> None:
        """The connection broke (or the answer was not HTTP) before the answer was complete."""

    def flush(self) -> None:
        """What arrived in one read has been handed over: pass it on."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend; ``sink`` is the exchange whose request it carries."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.sink: ResponseSink | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._readable = select.poll()
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._reading_paused = False

    # -- the pool's side --

    def send(self, sink: ResponseSink, request: bytes) -> None:
        """Write ``request``; its answer goes to ``sink``."""
        assert self.transport is not None
        self.sink = sink
        self.transport.write(request)

    def reusable(self, now: float) -> bool:
        if self.closed or now - self.idle_since > IDLE_EXPIRY_S:
            return False
        # Nothing is due on an idle connection: anything readable is an end of file (or junk)
        # that the event loop has not handled yet.
        return not self._readable.poll(0)

    def pause_reading(self) -> None:
        """The client reads slower than the backend writes: hold the backend back."""
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        self._readable.register(transport.get_extra_info("socket").fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # an answer to nothing: the connection is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(f"the backend's answer is not HTTP: {exc!r}")
            self.close()
        else:
            sink.flush()

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        self._lost(f"connection lost: {exc!r}" if exc else "connection closed by the backend")

    def _lost(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_lost(reason)

    # -- httptools --

    def on_message_begin(self) -> None:
        self._reason = b""
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = status < 200  # 100 Continue and the like: the answer is still to come
        if not self._interim and self.sink is not None:
            self.sink.upstream_head(status, self._reason, self._headers)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_end(self, self._parser.should_keep_alive())


class ConnectionPool:
    """The connections to ``address:port``: at most ``limit``, idle ones reused last-in first-out
    (the most recently used is the least likely to have been closed)."""

    def __init__(self, address: str, port: int, *, limit: int, connect_timeout_s: float) -> None:
        self.address = address
        self.port = port
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.closed = False
        # asyncio.get_running_loop() costs a getpid() system call: asked once per backend.
        self._loop = asyncio.get_running_loop()
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[UpstreamConnection | None]] = (
            collections.deque()
        )

    def take_idle(self) -> UpstreamConnection | None:
        """An idle connection that can carry a request now, or None."""
        idle = self._idle
        if not idle:
            return None
        now = self._loop.time()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        return None

    async def acquire(self) -> UpstreamConnection:
        """An idle connection, or a new one once there are fewer than ``limit``. Raises
        OSError or TimeoutError when connecting fails: then nothing was sent."""
        while True:
            connection = self.take_idle()
            if connection is not None:
                return connection
            if len(self._open) + self._connecting < self.limit:
                return await self._connect()
            waiter: asyncio.Future[UpstreamConnection | None] = (
                self._loop.create_future()
            )
            self._waiters.append(waiter)
            try:
                handed = await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if handed is not None:
                return handed

    def release(self, connection: UpstreamConnection) -> None:
        """``connection`` carried its answer whole and may carry another request."""
        connection.resume_reading()
        if self.closed or connection.closed:
            connection.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = self._loop.time()
        self._idle.append(connection)

    def discard(self, connection: UpstreamConnection) -> None:
        """``connection`` is closed: a waiter may open a new one in its place."""
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        self._wake_one()

    def close(self) -> None:
        """Close the idle connections now, the busy ones when their answers end."""
        self.closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionRefusedError("the backend was removed"))

    def abort(self) -> None:
        """Close every connection, busy or not."""
        self.close()
        for connection in list(self._open):
            connection.close()

    async def _connect(self) -> UpstreamConnection:
        if self.closed:
            raise ConnectionRefusedError("the backend was removed")
        loop = self._loop
        self._connecting += 1
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), self.address,
                                       self.port),
                self.connect_timeout_s,
            )
            assert isinstance(connection, UpstreamConnection)  # what the factory makes
        except BaseException:
            self._wake_one()
            raise
        finally:
            self._connecting -= 1
        self._open.add(connection)
        return connection

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
