"""The load balancer's HTTP/1.1 server: client connections parsed with httptools, each request
read whole and handed to a :class:`Handler`, its answer written before the next pipelined
request is handled. Keep-alive connections idle for long are closed by :meth:`Server.sweep`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Protocol, cast

import httptools

from gateway.lb.messages import Request, answer
from gateway.lb.proxy import Exchange

__all__ = ["ClientConnection", "Handler", "Server"]

log = logging.getLogger("gateway.lb")

KEEPALIVE_S = 75.0
"""How long a client connection may stay idle (nginx's default): longer than any client keeps
its idle connections, so that the load balancer is not the one closing a connection that a
client is sending a request on."""
MAX_PIPELINED = 16
"""Requests read ahead of the one being answered before reading from the client pauses."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Handler(Protocol):
    def handle(self, request: Request, client: ClientConnection) -> Exchange | None:
        """Answer ``request`` (calling ``client.write`` and ``client.finish``), now or later;
        returns the exchange still going on, if any."""


class Server:
    """What the client connections share: the handler, and the connections themselves."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[ClientConnection] = set()
        self.stopping = False
        """Set on shutdown: connections close after the answer they are writing."""

    def protocol(self) -> ClientConnection:
        """A new connection's protocol (``loop.create_server``'s factory)."""
        return ClientConnection(self)

    def sweep(self, idle_s: float) -> None:
        """Close the connections idle (no request being answered) for ``idle_s`` or more."""
        now = asyncio.get_running_loop().time()
        for connection in list(self.connections):
            if not connection.busy and now - connection.idle_since >= idle_s:
                connection.close()

    def busy(self) -> int:
        """Connections with a request being answered."""
        return sum(1 for connection in self.connections if connection.busy)


class ClientConnection(asyncio.Protocol):
    """One client's connection; :class:`~gateway.lb.proxy.Downstream` of its exchanges.

    A client that closes its side is gone, as uvicorn takes it: the answer it was waiting for
    is dropped (and the backend's connection with it), so an SSE stream does not outlive its
    reader."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        # asyncio.get_running_loop() costs a getpid() system call: asked once per connection.
        self._loop = asyncio.get_running_loop()
        self.busy = False
        """A request is being answered."""
        self.idle_since = 0.0
        self._parser = httptools.HttpRequestParser(self)
        self._client = b""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._pipelined: collections.deque[Request] = collections.deque()
        self._exchange: Exchange | None = None
        self._answered = 0
        self._closing = False
        self._lost = False

    # -- Downstream --

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._lost:
            self.transport.write(data)

    def finish(self, keep_alive: bool) -> None:
        self._exchange = None
        self.busy = False
        self._answered += 1
        if not keep_alive or self._closing or self.server.stopping:
            self.close()
            return
        self.idle_since = self._loop.time()
        if self._pipelined:
            if len(self._pipelined) == MAX_PIPELINED and self.transport is not None:
                self.transport.resume_reading()
            self._handle(self._pipelined.popleft())

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- asyncio --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = peer[0].encode() if isinstance(peer, tuple) else b""
        self.idle_since = self._loop.time()
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request before the upgrade has been handled as a plain one; what follows it
            # is another protocol, which is not passed on.
            self._closing = True
        except httptools.HttpParserCallbackError as exc:
            log.error("handling a request failed", exc_info=exc.__context__ or exc)
            self._fail(500, b"the load balancer failed to handle the request")
        except httptools.HttpParserError as exc:
            self._fail(400, f"not an HTTP/1.1 request: {exc}".encode())

    def pause_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.pause()

    def resume_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        self._pipelined.clear()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.client_lost()

    # -- httptools --

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # The client waits for this before sending the body (curl does above 1 kB); the
        # backend is not asked, the whole body is read here first anyway.
        if not self.busy and (b"expect", b"100-continue") in self._headers:
            self.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        request = Request(
            parser.get_method(), self._url, self._headers, b"".join(self._body),
            keep_alive=parser.should_keep_alive() and not parser.should_upgrade(),
            http11=parser.get_http_version() == "1.1", client=self._client,
        )
        if self.busy:
            self._pipelined.append(request)
            if len(self._pipelined) == MAX_PIPELINED and self.transport is not None:
                self.transport.pause_reading()
        else:
            self._handle(request)

    # -- answering --

    def _handle(self, request: Request) -> None:
        self.busy = True
        answered = self._answered
        exchange = self.server.handler.handle(request, self)
        if self._answered == answered:  # not answered at once: still going on
            self._exchange = exchange

    def _fail(self, status: int, message: bytes) -> None:
        if not self.busy:  # else the answer being written would be cut into
            self.write(answer(status, message, b"text/plain; charset=utf-8", keep_alive=False))
        self.close()
