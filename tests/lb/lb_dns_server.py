"""A tiny authoritative DNS server for the load balancer's tests, run as its own process.

    python lb_dns_server.py ZONE_FILE

Binds UDP on 127.0.0.1 (a free port), prints ``{"port": N}`` on stdout, and answers A queries
from ZONE_FILE, read again for every query so a test can rewrite it: one ``NAME ADDRESS`` per
line. A name without a line gets NXDOMAIN.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

TTL = 1


def records(zone: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in zone.read_text().splitlines():
        if line.strip():
            name, address = line.split()
            found.setdefault(name.rstrip(".").lower(), []).append(address)
    return found


def main() -> None:
    zone = Path(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        query = DNSRecord.parse(data)
        reply = query.reply()
        name = str(query.q.qname).rstrip(".").lower()
        addresses = records(zone).get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif query.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=TTL))
        sock.sendto(reply.pack(), peer)


if __name__ == "__main__":
    main()
