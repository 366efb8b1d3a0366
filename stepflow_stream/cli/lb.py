"""``lb``: the load balancer of one component class, in front of its component servers.

    stepflow-stream lb --upstream components.svc:8000 [--host H] [--port P]

Once listening it prints one line on stdout, ``{"port": N}``, as ``serve-components`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gateway.lb import LbOptions, serve

DEFAULT_PORT = 8080


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("--upstream", type=_host_port, required=True, metavar="NAME:PORT",
                        help="DNS name (resolved again and again) and port of the component "
                        "servers of one class")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--resolver", type=_host_port, metavar="HOST:PORT",
                        help="the DNS server to ask (default: the system's, /etc/resolv.conf)")
    parser.add_argument("--interval", type=_positive_seconds, default=5.0, metavar="SECONDS",
                        help="seconds between DNS resolutions and health checks (default 5)")
    parser.add_argument("--health-timeout", type=_positive_seconds, default=2.0,
                        metavar="SECONDS",
                        help="a health check (or DNS query) slower than this fails (default 2)")
    parser.add_argument("--connect-timeout", type=_positive_seconds, default=2.0,
                        metavar="SECONDS", help="connecting to a backend slower than this "
                        "fails, and the request goes to another (default 2)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def command(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every health check at info; a backend's state changes are logged by gateway.lb.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    name, port = args.upstream
    options = LbOptions(
        name=name, port=port, resolver=args.resolver, interval_s=args.interval,
        health_timeout_s=args.health_timeout, connect_timeout_s=args.connect_timeout,
    )
    serve(options, host=args.host, port=args.port)
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
    return host, int(port)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
