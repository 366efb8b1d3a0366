"""``gateway``: serve the REST API in front of a cluster (uvicorn)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.app import create_app
from gateway.batch_events import batch_event_routes
from gateway.events import event_routes, serving_events
from gateway.settings import gateway_settings
from stepflow_stream.cli.loading import load_run_config
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.errors import ConfigError, Location

__all__ = ["add_arguments", "command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True,
                        help="a config with 'runtime: {type: kafka}', a postgres stateStore, "
                        "and optionally a 'gateway' section (tokens, maxBodyBytes)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7840, help="port (default 7840)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def command(args: argparse.Namespace) -> int:
    import uvicorn  # only this command serves HTTP

    if not args.config.exists():
        raise ConfigError("config file not found", Location(str(args.config)))
    config = load_run_config(args.config, None)
    options = distributed_options(config)
    settings = gateway_settings(args.config, os.environ)
    app = create_app(config, options, settings=settings,
                     extra_routes=[*event_routes(), *batch_event_routes()],
                     lifespans=[serving_events])
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                lifespan="on")
    return 0
