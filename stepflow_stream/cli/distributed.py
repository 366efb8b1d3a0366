"""``agents`` (run the orchestrator and worker agents) and ``submit`` (send a run to them)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from stepflow_stream.cli.loading import (
    load_flow,
    load_run_config,
    parse_variables,
)
from stepflow_stream.cli.run import single_input
from stepflow_stream.config.model import Config
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.errors import ConfigError, InputError, Location
from stepflow_stream.flowtests import config_for_cases

ORCHESTRATOR = "orchestrator"


def add_agents_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True,
                        help="a config with 'runtime: {type: kafka}' and a postgres stateStore")
    parser.add_argument("--classes", help="comma-separated component classes (plugin names) to "
                        "run workers for; default: every plugin of the config")
    roles = parser.add_mutually_exclusive_group()
    roles.add_argument("--no-orchestrator", action="store_true",
                       help="run workers only")
    roles.add_argument("--orchestrator-only", action="store_true",
                       help="run the orchestrator only")
    parser.add_argument("--plugins-from-flow", type=Path, metavar="FLOW",
                        help="take plugins and routes from the config FLOW's test cases run "
                        "with, and only runtime and stateStore from --config")
    parser.add_argument("--data-dir", type=Path, default=Path(".stepflow/agents"),
                        help="where Faust keeps its local files (default .stepflow/agents)")
    parser.add_argument("--log-level", default="info", choices=["crit", "error", "warn",
                                                                  "info", "debug"])
    parser.add_argument("--driver", choices=["faust", "direct"],
                        help="what feeds the agents records: Faust agents, or plain aiokafka "
                        "consumer groups, which cost less per record (default: the config's "
                        "runtime.agentDriver, else faust)")


def cluster_config(config_path: Path, plugins_from_flow: Path | None) -> Config:
    """The config at ``config_path``, or, with ``plugins_from_flow``, the config that flow's
    test cases run with, deployed on the runtime and state store of ``config_path``."""
    cluster = load_run_config(config_path, None)
    if plugins_from_flow is None:
        return cluster
    flow = load_flow(plugins_from_flow)
    base = config_for_cases(flow, plugins_from_flow)
    return dataclasses.replace(base, runtime=cluster.runtime, state_store=cluster.state_store)


def agents_command(args: argparse.Namespace) -> int:
    config = cluster_config(args.config, args.plugins_from_flow)
    distributed_options(config)  # reject a config that selects no cluster before starting
    roles = _roles(args, config)
    if len(roles) == 1:
        return _run_role(args, config, roles[0])
    return _supervise(args, roles)


def _roles(args: argparse.Namespace, config: Config) -> list[str]:
    classes = list(config.plugins)
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        unknown = [c for c in classes if c not in config.plugins]
        if unknown:
            raise ConfigError(
                f"--classes names '{unknown[0]}', which is no plugin of the config "
                f"(plugins: {', '.join(config.plugins)})", Location(config.source)
            )
    roles = [] if args.no_orchestrator else [ORCHESTRATOR]
    if not args.orchestrator_only:
        roles.extend(f"worker:{c}" for c in classes)
    return roles


def _run_role(args: argparse.Namespace, config: Config, role: str) -> int:
    # Imported here: Faust is heavy, and only this command needs it.
    from agents.app import orchestrator_app, run_app, worker_app

    options = distributed_options(config)
    # /builtin/load_file reads below the flow's folder, as `run` and `test` do.
    base_dir = (args.plugins_from_flow or args.config).resolve().parent
    if (args.driver or options.agent_driver) == "direct":
        from agents.direct import run_direct

        level = {"crit": "CRITICAL", "warn": "WARNING"}.get(args.log_level,
                                                            args.log_level.upper())
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
        logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
        classes = list(config.plugins) if role == ORCHESTRATOR else [role.split(":", 1)[1]]
        run_direct(options, config, role, classes, base_dir=base_dir)
        return 0
    if role == ORCHESTRATOR:
        app = orchestrator_app(options, config, data_dir=args.data_dir)
        run_app(app, options, list(config.plugins), loglevel=args.log_level)
    else:
        component_class = role.split(":", 1)[1]
        app = worker_app(options, config, component_class, data_dir=args.data_dir,
                         base_dir=base_dir)
        run_app(app, options, [component_class], loglevel=args.log_level)
    return 0


def _supervise(args: argparse.Namespace, roles: list[str]) -> int:
    """One child process per role; a child that dies is started again after a pause."""
    def start(role: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "stepflow_stream", "agents", "--config",
                   str(args.config), "--data-dir", str(args.data_dir),
                   "--log-level", args.log_level]
        if args.driver is not None:
            command += ["--driver", args.driver]
        if args.plugins_from_flow is not None:
            command += ["--plugins-from-flow", str(args.plugins_from_flow)]
        if role == ORCHESTRATOR:
            command.append("--orchestrator-only")
        else:
            command += ["--no-orchestrator", "--classes", role.split(":", 1)[1]]
        return subprocess.Popen(command)

    children = {role: start(role) for role in roles}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"agents: {', '.join(f'{r} (pid {c.pid})' for r, c in children.items())}",
          file=sys.stderr, flush=True)
    while True:
        time.sleep(0.5)
        if stopping:
            for child in children.values():
                child.wait()
            return 0
        for role, child in list(children.items()):
            code = child.poll()
            if code is not None:
                print(f"agents: {role} exited with {code}; starting it again", file=sys.stderr,
                      flush=True)
                time.sleep(1.0)
                children[role] = start(role)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", type=Path, help="the flow file (YAML or JSON)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="the input as JSON")
    source.add_argument("--input-file", type=Path, help="a JSON or YAML file holding the input")
    parser.add_argument("--config", type=Path, required=True, help="the cluster's config")
    parser.add_argument("--run-id", help="the run id (default: a new one); submitting an id "
                        "again starts nothing new")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable (repeatable)")
    parser.add_argument("--variables-json", help="variables as one JSON object")
    parser.add_argument("--wait", action="store_true", help="wait for the result and print it")
    parser.add_argument("--timeout", type=float, help="with --wait: give up after this many "
                        "seconds (exit 1)")


def submit_command(args: argparse.Namespace) -> int:
    # A broker that cannot be reached is reported once, as an error line, not by aiokafka's
    # own log lines besides.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    flow = load_flow(args.flow)
    for warning in flow.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = load_run_config(args.config, args.flow)
    options = distributed_options(config)
    variables = parse_variables(args.var, args.variables_json)
    input_value = single_input(args, flow)
    if args.timeout is not None and args.timeout <= 0:
        raise InputError("--timeout must be a positive number of seconds")

    async def go() -> int:
        async with DistributedClient(options, config) as client:
            run_id = await client.submit(flow, input_value, variables, run_id=args.run_id)
            print(f"run id: {run_id}", file=sys.stderr, flush=True)
            if not args.wait:
                print(json.dumps({"runId": run_id}))
                return 0
            try:
                result = await client.wait(run_id, args.timeout)
            except TimeoutError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return 0 if result.ok else 1

    return asyncio.run(go())


