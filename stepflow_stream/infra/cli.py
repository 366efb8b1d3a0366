"""``stepflow-stream infra up|down|status``: the local Kafka broker and PostgreSQL server.

``up`` prints only ``NAME=VALUE`` lines on stdout (progress goes to stderr), so that
``eval "$(stepflow-stream infra up)"`` sets ``STEPFLOW_KAFKA_BOOTSTRAP`` and
``STEPFLOW_POSTGRES_URL`` for the tests and benchmarks that follow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepflow_stream.infra import (
    DEFAULT_DIR,
    SERVICES,
    ensure_kafka,
    ensure_postgres,
    status,
    stop_kafka,
    stop_postgres,
)

EXIT_OK, EXIT_NOT_RUNNING = 0, 3
ENV_NAMES = {"kafka": "STEPFLOW_KAFKA_BOOTSTRAP", "postgres": "STEPFLOW_POSTGRES_URL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``up``, ``down`` and ``status`` subcommands, each with ``--only`` and ``--dir``."""
    commands = parser.add_subparsers(dest="infra_command", required=True,
                                     parser_class=type(parser))
    for name, help_text, handler in (
        ("up", "start what is not running; print its environment variables", up_command),
        ("down", "stop the services (their data stays)", down_command),
        ("status", "what runs: pid, ports, URLs (exit 3 unless all run)", status_command),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--only", choices=SERVICES, help="one service instead of both")
        command.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                             help=f"where their files live (default {DEFAULT_DIR})")
        command.set_defaults(handler=handler)


def _services(args: argparse.Namespace) -> tuple[str, ...]:
    return (args.only,) if args.only else SERVICES


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def up_command(args: argparse.Namespace) -> int:
    starters = {"kafka": ensure_kafka, "postgres": ensure_postgres}
    for name in _services(args):
        value = starters[name](args.dir, progress=_progress)
        print(f"{ENV_NAMES[name]}={value}", flush=True)
    return EXIT_OK


def down_command(args: argparse.Namespace) -> int:
    stoppers = {"kafka": stop_kafka, "postgres": stop_postgres}
    for name in _services(args):
        stoppers[name](args.dir, progress=_progress)
    return EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    services = status(args.dir, _services(args))
    for service in services:
        print(service.describe())
    return EXIT_OK if all(service.running for service in services) else EXIT_NOT_RUNNING
