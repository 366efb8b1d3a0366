"""``ingest``: one run per record of a Kafka topic, each result produced to another topic.

Records whose value is not JSON, does not match the flow's input schema, or whose run failed
go to ``--dead-letter-topic`` when it is given, else to ``--to-topic`` as failed results.
Results are produced exactly once, in input order per partition, with the input key; readers
of the output topics must read ``read_committed``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from stepflow_stream.cli.loading import load_flow, load_run_config, parse_variables
from stepflow_stream.core.variables import resolve_variables
from stepflow_stream.distributed.ingest import IngestSettings, default_group
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.errors import ConfigError, InputError, Location
from stepflow_stream.plugins.registry import create_plugins
from stepflow_stream.runtime.embedded import check_flow

__all__ = ["add_arguments", "command"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", type=Path, required=True, help="the flow file (YAML or JSON)")
    parser.add_argument("--config", type=Path, required=True,
                        help="the cluster's config ('runtime: {type: kafka}', postgres "
                        "stateStore)")
    parser.add_argument("--from-topic", required=True,
                        help="the input topic: each record's value is a run's input (JSON)")
    parser.add_argument("--to-topic", required=True,
                        help="the output topic (created if missing): one result per record, "
                        "with the input key, in input order per partition")
    parser.add_argument("--dead-letter-topic",
                        help="where failures go (created if missing); default: --to-topic")
    parser.add_argument("--max-in-flight", type=int, default=1000,
                        help="records whose results are not yet produced; fetching stops at "
                        "this many (default 1000)")
    parser.add_argument("--group", help="the consumer group, also part of the run ids "
                        "(default: {topicPrefix}stepflow-ingest.FROM.TO)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable of every run (repeatable)")
    parser.add_argument("--driver", choices=["faust", "direct"],
                        help="what reads the input topic: a Faust agent, or a plain aiokafka "
                        "consumer group, which costs less per record (default: the config's "
                        "runtime.agentDriver, else faust)")
    parser.add_argument("--data-dir", type=Path, default=Path(".stepflow/agents"),
                        help="where Faust keeps its local files (default .stepflow/agents)")
    parser.add_argument("--log-level", default="info",
                        choices=["crit", "error", "warn", "info", "debug"])


def command(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    for warning in flow.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not args.config.exists():
        raise ConfigError("config file not found", Location(str(args.config)))
    config = load_run_config(args.config, None)
    options = distributed_options(config)
    settings = IngestSettings(
        from_topic=_topic("--from-topic", args.from_topic),
        to_topic=_topic("--to-topic", args.to_topic),
        dead_letter_topic=(None if args.dead_letter_topic is None
                           else _topic("--dead-letter-topic", args.dead_letter_topic)),
        group=args.group or default_group(options.topic_prefix, args.from_topic, args.to_topic),
        max_in_flight=args.max_in_flight,
    )
    _check(settings)
    variables = parse_variables(args.var, None)
    resolve_variables(flow, variables, os.environ)  # a missing or wrong variable: exit 2 now
    check_flow(flow, config, create_plugins(config, Path.cwd()))

    # Imported here: the agents (and Faust) are heavy, and only this command needs them.
    from agents.ingest import run_ingest

    driver = args.driver or options.agent_driver
    if driver == "direct":
        level = {"crit": "CRITICAL", "warn": "WARNING"}.get(args.log_level,
                                                            args.log_level.upper())
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
        logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    run_ingest(settings, options, config, flow, variables, driver=driver,
               data_dir=args.data_dir, loglevel=args.log_level)
    return 0


def _topic(option: str, name: str) -> str:
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InputError(f"{option} '{name}' is not a Kafka topic name (1 to 249 of "
                         "letters, digits, '.', '_', '-')")
    return name


def _check(settings: IngestSettings) -> None:
    if settings.to_topic == settings.from_topic:
        raise InputError("--to-topic is --from-topic: results would be read as inputs")
    if settings.dead_letter_topic == settings.from_topic:
        raise InputError("--dead-letter-topic is --from-topic: failures would be read as "
                         "inputs")
    if settings.max_in_flight < 1:
        raise InputError(f"--max-in-flight must be at least 1, got {settings.max_in_flight}")
    if not settings.group:
        raise InputError("--group must not be empty")
