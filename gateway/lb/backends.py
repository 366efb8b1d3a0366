"""The backends of one upstream: component server processes known by address and instance id,
each with its own connection pool, and the choice of one for a request.

A backend is in the pool while its address resolves and its ``GET /health`` answers with an
``instanceId``. A backend that refuses a connection is marked down at once (passive check) and
gets no requests until a health check passes again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import httpx

__all__ = ["Backend", "BackendPool"]

log = logging.getLogger("gateway.lb")


class Backend:
    """One component server process: ``address:port`` reporting ``instance_id``."""

    def __init__(
        self, address: str, port: int, instance_id: str, client: httpx.AsyncClient
    ) -> None:
        self.address = address
        self.port = port
        self.instance_id = instance_id
        self.client = client
        """Connections to this backend only (based at its URL)."""
        self.in_flight = 0
        """Requests sent and not yet fully answered (least-connections counts these)."""
        self.up = True
        """False from a failed connection until the next health check that passes."""

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return f"Backend({self.name}, {self.instance_id!r}, {state}, in_flight={self.in_flight})"


class BackendPool:
    """The backends of an upstream port; ``refresh`` keeps it in step with DNS and health."""

    def __init__(
        self,
        port: int,
        *,
        new_client: Callable[[str], httpx.AsyncClient],
        health_client: httpx.AsyncClient,
    ) -> None:
        self.port = port
        self._new_client = new_client
        self._health = health_client
        self._backends: dict[str, Backend] = {}
        self._retired: list[Backend] = []
        self._turn = 0

    def addresses(self) -> frozenset[str]:
        """The addresses of the backends known now."""
        return frozenset(self._backends)

    def backends(self) -> list[Backend]:
        """Every backend known, up or down, in address order."""
        return [self._backends[address] for address in sorted(self._backends)]

    def healthy(self) -> list[Backend]:
        """The backends that get requests."""
        return [backend for backend in self.backends() if backend.up]

    def least_loaded(self, excluded: Iterable[Backend] = ()) -> Backend | None:
        """The healthy backend with the fewest requests in flight; ties go round in turn, so
        that one request at a time still spreads."""
        skip = set(excluded)
        candidates = [backend for backend in self.healthy() if backend not in skip]
        if not candidates:
            return None
        self._turn += 1
        start = self._turn % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda backend: backend.in_flight)

    def instance(self, instance_id: str) -> Backend | None:
        """The healthy backend that reports ``instance_id``."""
        for backend in self.healthy():
            if backend.instance_id == instance_id:
                return backend
        return None

    def mark_down(self, backend: Backend, reason: str) -> None:
        """Take ``backend`` out of routing until a health check passes (passive check)."""
        if backend.up:
            log.warning("backend %s (%s) down: %s", backend.name, backend.instance_id, reason)
        backend.up = False

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
            self._retired.append(backend)
        for address, instance_id in found.items():
            if instance_id is not None and address not in self._backends:
                log.info("backend %s:%d (%s) added", address, self.port, instance_id)
                self._backends[address] = Backend(
                    address, self.port, instance_id, self._new_client(self._url(address))
                )
        await self._close_idle_retired()

    async def aclose(self) -> None:
        """Close every backend's connections, and the health checks'."""
        await self._health.aclose()
        for backend in [*self._backends.values(), *self._retired]:
            await backend.client.aclose()
        self._backends.clear()
        self._retired.clear()

    async def _check(self, address: str) -> str | None:
        """The instance id ``GET /health`` reports, or None for any other answer."""
        try:
            response = await self._health.get(self._url(address) + "/health")
            document = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        instance_id = document.get("instanceId") if isinstance(document, dict) else None
        return instance_id if isinstance(instance_id, str) and instance_id else None

    async def _close_idle_retired(self) -> None:
        # A retired backend may still be streaming answers; its pool closes once they end.
        busy = []
        for backend in self._retired:
            if backend.in_flight:
                busy.append(backend)
            else:
                await backend.client.aclose()
        self._retired = busy

    def _url(self, address: str) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.port}"
