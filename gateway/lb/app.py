"""The load balancer's ASGI app (``GET /health``, ``GET /metrics``, everything else proxied)
and :func:`serve`, which runs it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.lb.backends import BackendPool
from gateway.lb.discovery import AddressResolver, discover, refresh
from gateway.lb.metrics import Metrics
from gateway.lb.proxy import Proxy
from stepflow_stream.sdk.serve import AnnouncingServer

__all__ = ["LbOptions", "create_app", "serve"]

log = logging.getLogger("gateway.lb")

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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
    """Connections per backend at most."""

    @property
    def upstream(self) -> str:
        return f"{self.name}:{self.port}"


class LoadBalancer:
    """The state behind the app: the backend pool, its discovery loop, the counters."""

    def __init__(self, options: LbOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.resolver = AddressResolver(options.name, options.resolver, options.health_timeout_s)
        # Health checks open a connection each: a check must see whether a new one succeeds.
        health_client = httpx.AsyncClient(
            timeout=options.health_timeout_s, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.pool = BackendPool(
            options.port, new_client=self._backend_client, health_client=health_client
        )
        self.proxy = Proxy(self.pool, self.metrics, options.upstream)

    def _backend_client(self, base_url: str) -> httpx.AsyncClient:
        # No read timeout: an execute may run (or wait on its callbacks) for long.
        timeout = httpx.Timeout(None, connect=self.options.connect_timeout_s)
        limits = httpx.Limits(
            max_connections=self.options.max_connections, max_keepalive_connections=32
        )
        return httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await refresh(self.resolver, self.pool)  # serve with the backends there are from the start
        log.info("upstream %s: %d healthy backends", self.options.upstream,
                 len(self.pool.healthy()))
        watcher = asyncio.create_task(discover(self.resolver, self.pool, self.options.interval_s))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.pool.aclose()

    async def health(self, request: Request) -> Response:
        backends = [
            {"address": backend.name, "instanceId": backend.instance_id, "up": backend.up,
             "inFlight": backend.in_flight}
            for backend in self.pool.backends()
        ]
        healthy = sum(1 for backend in backends if backend["up"])
        return JSONResponse(
            {"status": "healthy" if healthy else "unavailable", "upstream": self.options.upstream,
             "healthyBackends": healthy, "backends": backends},
            status_code=200 if healthy else 503,
        )

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(
            self.metrics.render(self.pool), media_type="text/plain; version=0.0.4"
        )


def create_app(options: LbOptions) -> Starlette:
    """The load balancer of ``options.upstream`` as an ASGI app (its lifespan runs discovery)."""
    balancer = LoadBalancer(options)
    return Starlette(
        routes=[
            Route("/health", balancer.health, methods=["GET"]),
            Route("/metrics", balancer.metrics_text, methods=["GET"]),
            Route("/{path:path}", balancer.proxy.forward, methods=_METHODS),
        ],
        lifespan=balancer.lifespan,
    )


def serve(
    options: LbOptions, *, host: str, port: int, announce_to: TextIO | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; print ``{"port": N}`` on ``announce_to`` (default stdout)
    once listening, as ``serve-components`` does."""
    stream = announce_to or sys.stdout

    def announce(bound: int) -> None:
        stream.write(json.dumps({"port": bound}) + "\n")
        stream.flush()
        log.info("load balancing %s on %s:%d", options.upstream, host, bound)

    config = uvicorn.Config(
        create_app(options), host=host, port=port, log_config=None, access_log=False,
        lifespan="on",
    )
    AnnouncingServer(config, announce).run()
