"""The backends of one upstream: component server processes known by address and instance id,
each with its own connection pool, and the choice of one for a request.

A backend is in the pool while its address resolves and its ``GET /health`` answers with an
``instanceId``. A backend that refuses a connection, or breaks one it had been sent a request
on, is marked down at once (passive check) and gets no requests until a health check passes
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

import httpx

from gateway.lb.upstream import ConnectionPool

__all__ = ["Backend", "BackendPool"]

log = logging.getLogger("gateway.lb")


class Backend:
    """One component server process: ``address:port`` reporting ``instance_id``."""

    def __init__(self, address: str, port: int, instance_id: str,
                 connections: ConnectionPool) -> None:
        self.address = address
        self.port = port
        self.instance_id = instance_id
        self.connections = connections
        """Connections to this backend only."""
        self.in_flight = 0
        """Requests sent and not yet fully answered (least-connections counts these)."""
        self.up = True
        """False from a failed connection until the next health check that passes."""
        self.name = f"{address}:{port}"
        self.key = (self.name, instance_id)
        """What the request counter is labelled with."""
        host = f"[{address}]" if ":" in address else address
        self.host_header = f"{host}:{port}".encode()

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return f"Backend({self.name}, {self.instance_id!r}, {state}, in_flight={self.in_flight})"


class BackendPool:
    """The backends of an upstream port; ``refresh`` keeps it in step with DNS and health."""

    def __init__(
        self,
        port: int,
        *,
        health_client: httpx.AsyncClient,
        max_connections: int = 256,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.port = port
        self._health = health_client
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._backends: dict[str, Backend] = {}
        # What routing reads on every request, rebuilt whenever a backend comes, goes, or is
        # marked down or up.
        self._healthy: tuple[Backend, ...] = ()
        self._by_instance: dict[str, Backend] = {}
        self._turn = 0

    def addresses(self) -> frozenset[str]:
        """The addresses of the backends known now."""
        return frozenset(self._backends)

    def backends(self) -> list[Backend]:
        """Every backend known, up or down, in address order."""
        return [self._backends[address] for address in sorted(self._backends)]

    def healthy(self) -> tuple[Backend, ...]:
        """The backends that get requests, in address order."""
        return self._healthy

    def least_loaded(self, excluded: Collection[Backend] = ()) -> Backend | None:
        """The healthy backend with the fewest requests in flight; ties go round in turn, so
        that one request at a time still spreads."""
        candidates = self._healthy
        count = len(candidates)
        if not count:
            return None
        self._turn += 1
        best: Backend | None = None
        for offset in range(count):
            backend = candidates[(self._turn + offset) % count]
            if (best is None or backend.in_flight < best.in_flight) and backend not in excluded:
                best = backend
        return best

    def instance(self, instance_id: str) -> Backend | None:
        """The healthy backend that reports ``instance_id``."""
        return self._by_instance.get(instance_id)

    def mark_down(self, backend: Backend, reason: str) -> None:
        """Take ``backend`` out of routing until a health check passes (passive check)."""
        if backend.up:
            log.warning("backend %s (%s) down: %s", backend.name, backend.instance_id, reason)
            backend.up = False
            self._routing_changed()

    async def refresh(self, addresses: frozenset[str]) -> None:
        """Health-check ``addresses``; keep those that report an instance id, drop the rest."""
        ordered = sorted(addresses)
        reports = await asyncio.gather(*(self._check(address) for address in ordered))
        found = dict(zip(ordered, reports, strict=True))
        for address, backend in list(self._backends.items()):
            instance_id = found.get(address)
            if instance_id == backend.instance_id:
                if not backend.up:
                    log.info("backend %s (%s) up again", backend.name, instance_id)
                backend.up = True
                continue
            reason = "not resolved" if address not in found else "unhealthy or restarted"
            log.info("backend %s (%s) removed: %s", backend.name, backend.instance_id, reason)
            del self._backends[address]
            # Answers still streaming from it end on their connections; the idle ones close.
            backend.connections.close()
        for address, instance_id in found.items():
            if instance_id is not None and address not in self._backends:
                log.info("backend %s:%d (%s) added", address, self.port, instance_id)
                connections = ConnectionPool(address, self.port, limit=self._max_connections,
                                             connect_timeout_s=self._connect_timeout_s)
                self._backends[address] = Backend(address, self.port, instance_id, connections)
        self._routing_changed()

    async def aclose(self) -> None:
        """Close every backend's connections, and the health checks'."""
        await self._health.aclose()
        for backend in self._backends.values():
            backend.connections.abort()
        self._backends.clear()
        self._routing_changed()

    async def _check(self, address: str) -> str | None:
        """The instance id ``GET /health`` reports, or None for any other answer."""
        try:
            response = await self._health.get(self._url(address) + "/health")
            document = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        instance_id = document.get("instanceId") if isinstance(document, dict) else None
        return instance_id if isinstance(instance_id, str) and instance_id else None

    def _routing_changed(self) -> None:
        self._healthy = tuple(backend for backend in self.backends() if backend.up)
        self._by_instance = {backend.instance_id: backend for backend in self._healthy}

    def _url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.port}"
