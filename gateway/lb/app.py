"""The load balancer: its own answers (``GET /health``, ``GET /metrics``), everything else
proxied; :func:`serving` runs it in the running event loop, :func:`serve` in a process of its
own (uvloop), until SIGINT or SIGTERM.

It is its own HTTP server (``gateway.lb.server``) rather than an ASGI app: a request forwarded
on a pooled connection then costs a parse, a write and a dict lookup, with no task, no ASGI
messages and no HTTP client in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

import httpx
import uvloop

from gateway.lb.backends import BackendPool
from gateway.lb.discovery import AddressResolver, discover, refresh
from gateway.lb.messages import Request, answer, json_answer
from gateway.lb.metrics import Metrics
from gateway.lb.proxy import Exchange, Proxy
from gateway.lb.server import KEEPALIVE_S, ClientConnection, Server

__all__ = ["LbOptions", "LoadBalancer", "serve", "serving"]

log = logging.getLogger("gateway.lb")

_OWN_PATHS = frozenset({b"/health", b"/metrics"})
_SWEEP_EVERY_S = 5.0


@dataclass(frozen=True)
class LbOptions:
    """What one load balancer serves and how it watches its backends."""

    name: str
    """The DNS name (or an address) of the upstream's component servers."""
    port: int
    """The port every backend listens on."""
    resolver: tuple[str, int] | None = None
    """The DNS server to ask, ``(host, port)``; None: the system's resolvers."""
    interval_s: float = 5.0
    """Seconds between rounds of DNS resolution and health checks."""
    health_timeout_s: float = 2.0
    """How long a ``GET /health`` (and a DNS query) may take before the backend counts as down."""
    connect_timeout_s: float = 2.0
    """How long connecting to a backend may take before the request goes to another."""
    max_connections: int = 256
    """Connections per backend at most; more requests wait for one to be free."""
    graceful_timeout_s: float = 30.0
    """On shutdown, how long answers being written may take to end."""

    @property
    def upstream(self) -> str:
        return f"{self.name}:{self.port}"


class LoadBalancer:
    """The state behind the server: the backend pool, its discovery loop, the counters."""

    def __init__(self, options: LbOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.resolver = AddressResolver(options.name, options.resolver, options.health_timeout_s)
        # Health checks open a connection each: a check must see whether a new one succeeds.
        health_client = httpx.AsyncClient(
            timeout=options.health_timeout_s, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.pool = BackendPool(
            options.port, health_client=health_client, max_connections=options.max_connections,
            connect_timeout_s=options.connect_timeout_s,
        )
        self.proxy = Proxy(self.pool, self.metrics, options.upstream)
        self.server = Server(self)

    def handle(self, request: Request, client: ClientConnection) -> Exchange | None:
        """Answer the load balancer's own paths here, pass everything else on."""
        if request.method in (b"GET", b"HEAD") and request.path in _OWN_PATHS:
            head = request.method == b"HEAD"
            if request.path == b"/health":
                client.write(self._health(request.keep_alive, head))
            else:
                text = self.metrics.render(self.pool).encode()
                client.write(answer(200, text, b"text/plain; version=0.0.4; charset=utf-8",
                                    keep_alive=request.keep_alive, head=head))
            client.finish(request.keep_alive)
            return None
        return self.proxy.forward(request, client)

    def _health(self, keep_alive: bool, head: bool) -> bytes:
        backends = [
            {"address": backend.name, "instanceId": backend.instance_id, "up": backend.up,
             "inFlight": backend.in_flight}
            for backend in self.pool.backends()
        ]
        healthy = sum(1 for backend in backends if backend["up"])
        return json_answer(
            200 if healthy else 503,
            {"status": "healthy" if healthy else "unavailable", "upstream": self.options.upstream,
             "healthyBackends": healthy, "backends": backends},
            keep_alive=keep_alive, head=head,
        )

    @contextlib.asynccontextmanager
    async def running(self, host: str, port: int) -> AsyncIterator[int]:
        """Discover the backends, listen on ``host:port`` and serve; yields the port bound.
        On exit stops listening and lets the answers being written end (at most
        ``graceful_timeout_s``)."""
        await refresh(self.resolver, self.pool)  # serve with the backends there are from the start
        log.info("upstream %s: %d healthy backends", self.options.upstream,
                 len(self.pool.healthy()))
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(discover(self.resolver, self.pool, self.options.interval_s)),
                 asyncio.create_task(self._sweep())]
        listener = await loop.create_server(self.server.protocol, host, port, backlog=4096)
        try:
            yield listener.sockets[0].getsockname()[1]
        finally:
            listener.close()
            self.server.stopping = True
            self.server.sweep(0.0)
            deadline = loop.time() + self.options.graceful_timeout_s
            while self.server.busy() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.server.connections):
                connection.close()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.pool.aclose()
            await listener.wait_closed()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY_S)
            self.server.sweep(KEEPALIVE_S)


@contextlib.asynccontextmanager
async def serving(options: LbOptions, host: str = "127.0.0.1", port: int = 0
                  ) -> AsyncIterator[str]:
    """The load balancer of ``options.upstream`` serving in the running loop; yields its URL."""
    async with LoadBalancer(options).running(host, port) as bound:
        yield f"http://{host}:{bound}"


def serve(
    options: LbOptions, *, host: str, port: int, announce_to: TextIO | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; print ``{"port": N}`` on ``announce_to`` (default stdout)
    once listening, as ``serve-components`` does."""
    stream = announce_to or sys.stdout

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with LoadBalancer(options).running(host, port) as bound:
            stream.write(json.dumps({"port": bound}) + "\n")
            stream.flush()
            log.info("load balancing %s on %s:%d", options.upstream, host, bound)
            await stop.wait()
        log.info("stopped")

    uvloop.run(main())
