"""Where the backends are: the A records of the upstream name, asked again every few seconds.

A name that does not exist (or has no A record) means no backends. A DNS server that does not
answer tells nothing: the backends found last are kept rather than dropped for a DNS hiccup.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

import dns.asyncresolver
import dns.exception
import dns.resolver

from gateway.lb.backends import BackendPool

__all__ = ["AddressResolver", "discover"]

log = logging.getLogger("gateway.lb")


class AddressResolver:
    """The IPv4 addresses of ``name``, asked of ``nameserver`` (``(host, port)``), or of the
    system's resolvers (``/etc/resolv.conf``, its search domains included) when it is None."""

    def __init__(
        self, name: str, nameserver: tuple[str, int] | None = None, timeout_s: float = 2.0
    ) -> None:
        self.name = name
        self._literal = _is_address(name)
        self._search = nameserver is None
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self._resolver.nameservers = [nameserver[0]]
            self._resolver.port = nameserver[1]
        self._resolver.lifetime = timeout_s

    async def addresses(self) -> frozenset[str] | None:
        """The addresses now: empty when the name does not exist, None when DNS did not
        answer (the caller keeps what it had)."""
        if self._literal:
            return frozenset({self.name})
        try:
            answer = await self._resolver.resolve(self.name, "A", search=self._search)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return frozenset()
        except dns.exception.DNSException as exc:
            log.warning("resolving %s failed: %s; keeping the backends known", self.name, exc)
            return None
        return frozenset(record.to_text() for record in answer)


async def discover(resolver: AddressResolver, pool: BackendPool, interval_s: float) -> None:
    """Resolve and health-check every ``interval_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await refresh(resolver, pool)


async def refresh(resolver: AddressResolver, pool: BackendPool) -> None:
    """One round: resolve the name, then health-check what it resolves to."""
    addresses = await resolver.addresses()
    if addresses is None:
        addresses = pool.addresses()
    try:
        await pool.refresh(addresses)
    except Exception:  # the loop must outlive any one round
        log.exception("refreshing the backends of %s failed", resolver.name)


def _is_address(name: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False
