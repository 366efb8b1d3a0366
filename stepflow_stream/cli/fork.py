"""``fork RUN --from-step STEP``: a new run that reuses what RUN recorded before STEP.

The fork runs STEP and every step that reads it (directly or through others) again, and takes
RUN's recorded outputs for the other steps RUN completed, without calling their components
(see :mod:`stepflow_stream.core.fork` for when a step is reused). ``--override JSON`` replaces
the run's input (it is not merged): steps before STEP whose input changes with it run again
too. ``--flow FILE`` forks with another version of the flow. The new run records its parent
(``parentRunId``) and the step it was forked from, and its reused steps are marked as such in
its journal. On the distributed runtime (``--config`` with a postgres stateStore) the fork is
submitted to the cluster like any run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from stepflow_stream.cli.loading import load_flow, load_run_config, open_store, parse_input_json
from stepflow_stream.cli.replay import naming_run
from stepflow_stream.cli.run import check_input
from stepflow_stream.config import Config
from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import InputError
from stepflow_stream.journal.base import BlobStore, Journal
from stepflow_stream.journal.dump import DUMP_SUFFIX
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime
from stepflow_stream.runtime.fork import Fork, prepare_fork

__all__ = ["add_arguments", "command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", help="the run to fork")
    parser.add_argument("--from-step", required=True, metavar="STEP",
                        help="run this step and every step that reads it again")
    parser.add_argument("--override", metavar="JSON", help="the new run's input instead of "
                        "the run's (replaced, not merged)")
    parser.add_argument("--flow", type=Path, help="fork with this flow file instead of the "
                        "flow the run was recorded with")
    parser.add_argument("--config", type=Path, help="the config (plugins, routes); with a "
                        "postgres stateStore, the cluster to fork on")
    parser.add_argument("--journal", help="an SQLite journal path (default "
                        ".stepflow/journal.db)")
    parser.add_argument("--timeout", type=float, help="on a cluster: stop waiting for the "
                        "result after this many seconds (exit 1)")


def command(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow) if args.flow is not None else None
    override: JSON = None
    if args.override is not None:
        override = parse_input_json(args.override, "--override")
    config = load_run_config(args.config, args.flow)
    if args.journal is not None and args.journal.endswith(DUMP_SUFFIX):
        raise InputError(f"--journal {args.journal} is a journal dump, which is read-only: "
                         "fork from an SQLite journal or a cluster")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError("--timeout must be a positive number of seconds")
    if config.state_store.type == "postgres":
        return asyncio.run(_fork_on_cluster(args, config, flow, override))
    return asyncio.run(_fork_embedded(args, config, flow, override))


async def _prepare(args: argparse.Namespace, journal: Journal, blobs: BlobStore,
                   flow: Flow | None, override: JSON) -> Fork:
    try:
        fork = await prepare_fork(journal, blobs, args.run_id, args.from_step, flow=flow,
                                  input=override, replace_input=args.override is not None)
    except InputError as exc:
        if exc.location.field == "fromStep":
            raise InputError(f"--from-step: {exc.reason}") from None
        raise
    check_input(fork.flow, fork.input)
    return fork


def _announce(run_id: str, args: argparse.Namespace, fork: Fork) -> None:
    again = ", ".join(fork.plan.rerun) or "none"
    print(f"run id: {run_id} (fork of {args.run_id} from step '{args.from_step}'; reused "
          f"{len(fork.plan.reused)} steps; running again: {again})", file=sys.stderr,
          flush=True)


def _report(result: FlowResult) -> int:
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0 if result.ok else 1


async def _fork_embedded(args: argparse.Namespace, config: Config, flow: Flow | None,
                         override: JSON) -> int:
    with naming_run(args.run_id):
        async with open_store(args.journal, must_exist=True) as (journal, blobs):
            fork = await _prepare(args, journal, blobs, flow, override)
            runtime = EmbeddedRuntime(config, journal, blobs, EmbeddedOptions())
            async with runtime:
                run_id = await runtime.submit(
                    fork.flow, fork.input, fork.plan.variables, parent_run_id=args.run_id,
                    forked_from_step=args.from_step, reused=fork.plan.reused,
                )
                _announce(run_id, args, fork)
                result = await runtime.wait(run_id)
    return _report(result)


async def _fork_on_cluster(args: argparse.Namespace, config: Config, flow: Flow | None,
                           override: JSON) -> int:
    # Imported here: the cluster client brings Kafka's and PostgreSQL's drivers.
    from stepflow_stream.distributed.client import DistributedClient
    from stepflow_stream.distributed.options import distributed_options
    from stepflow_stream.journal.postgres import PostgresBlobStore

    if args.journal is not None:
        raise InputError("--journal and a --config with a postgres stateStore name two "
                         "journals: give one")
    options = distributed_options(config)
    # An unreachable broker is reported once, as an error line, not by aiokafka's logs too.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    async with DistributedClient(options, config) as client:
        assert client.database is not None
        fork = await _prepare(args, client.journal, PostgresBlobStore(client.database), flow,
                              override)
        run_id = await client.submit(
            fork.flow, fork.input, fork.plan.variables, parent_run_id=args.run_id,
            forked_from_step=args.from_step, reused=fork.plan.reused,
        )
        _announce(run_id, args, fork)
        try:
            result = await client.wait(run_id, args.timeout)
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return _report(result)
