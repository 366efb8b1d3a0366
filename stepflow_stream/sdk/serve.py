"""``stepflow-stream serve-components module:attribute``: serve a ComponentServer with uvicorn.

Once listening, the command prints exactly one line on stdout, ``{"port": N}``, and flushes it:
with ``--port 0`` the process that started it learns the free port the server bound. Anything
else (logs, and ``print`` calls of the components, which are redirected) goes to stderr.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight requests finish (at
most ``--graceful-timeout`` seconds) and exits. An execute waiting for a callback answer
cannot get one after that (answers arrive on new connections), so it ends at the timeout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import TextIO

import uvicorn

from stepflow_stream.errors import UserInputError
from stepflow_stream.sdk._server import ComponentServer

logger = logging.getLogger("stepflow_stream.sdk")

DEFAULT_GRACEFUL_TIMEOUT = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument(
        "target",
        metavar="MODULE:ATTRIBUTE",
        help="where the ComponentServer is, e.g. my_components:server",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 (the default) picks a free one"
    )
    parser.add_argument(
        "--max-concurrency",
        type=_positive,
        default=None,
        help="executions in flight at most (default: the server's own)",
    )
    parser.add_argument(
        "--instance-id",
        default=None,
        help="the Stepflow-Instance-Id to report (default: the server's own)",
    )
    parser.add_argument(
        "--app-dir", default=".", help="directory put first on the import path (default: .)"
    )
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        help="seconds in-flight requests get after SIGTERM (default 30)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def command(args: argparse.Namespace) -> int:
    """Run the command; returns when the server has shut down."""
    # Components that print must not garble the port line, the one thing stdout carries.
    announce_to, sys.stdout = sys.stdout, sys.stderr
    try:
        server = load_server(args.target, args.app_dir)
        logging.basicConfig(
            level=args.log_level.upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        serve(
            server,
            host=args.host,
            port=args.port,
            instance_id=args.instance_id,
            max_concurrency=args.max_concurrency,
            graceful_timeout=args.graceful_timeout,
            announce_to=announce_to,
        )
    finally:
        sys.stdout = announce_to
    return 0


def load_server(target: str, app_dir: str = ".") -> ComponentServer:
    """The ComponentServer at ``module:attribute``; raises UserInputError."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UserInputError(f"'{target}' is not MODULE:ATTRIBUTE (e.g. my_components:server)")
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module exists; something it imports does not
        raise UserInputError(f"cannot import module '{module_name}': {exc}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise UserInputError(f"module '{module_name}' has no attribute '{attribute}'")
        found = getattr(found, part)
    if not isinstance(found, ComponentServer):
        raise UserInputError(
            f"'{target}' is a {type(found).__name__}, not a stepflow_stream.sdk.ComponentServer"
        )
    return found


def serve(
    server: ComponentServer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    instance_id: str | None = None,
    max_concurrency: int | None = None,
    graceful_timeout: int = DEFAULT_GRACEFUL_TIMEOUT,
    announce_to: TextIO | None = None,
) -> None:
    """Serve ``server`` until SIGINT/SIGTERM; print ``{"port": N}`` to ``announce_to``
    (default stdout) once listening."""
    app = server.asgi_app(instance_id=instance_id, max_concurrency=max_concurrency)
    stream = announce_to or sys.stdout

    def announce(bound: int) -> None:
        stream.write(json.dumps({"port": bound}) + "\n")
        stream.flush()
        logger.info(
            "serving %d components of '%s' on %s:%d (instance %s)",
            len(server.components),
            server.name,
            host,
            bound,
            instance_id or server.instance_id,
        )

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_timeout,
    )
    AnnouncingServer(config, announce).run()


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling ``announce(port)`` once its socket listens (so a caller that
    asked for port 0 learns the port); the load balancer serves with it too."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[int], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            self._announce(self.servers[0].sockets[0].getsockname()[1])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
