"""``stepflow-stream run``: one input, or a batch from a JSON Lines file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from stepflow_stream.cli.loading import (
    load_flow,
    load_input_file,
    load_run_config,
    open_store,
    parse_input_json,
    parse_variables,
    read_jsonl,
)
from stepflow_stream.cli.progress import ProgressBar
from stepflow_stream.config import Config
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.schema import describe
from stepflow_stream.errors import InputError, Location
from stepflow_stream.runtime.batch import run_batch
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", type=Path, help="the flow file (YAML or JSON)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="the input as JSON")
    source.add_argument("--input-file", type=Path, help="a JSON or YAML file holding the input")
    source.add_argument("--inputs", type=Path, help="a JSON Lines file: one run per line")
    parser.add_argument("--output", type=Path, help="with --inputs: where results go (JSONL)")
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="with --inputs: runs in flight at once (default 64)")
    parser.add_argument("--batch-id", help="with --inputs: resume this batch (the id printed "
                        "when it started): finished items are not run again")
    parser.add_argument("--config", type=Path, help="the config file")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable (repeatable); VALUE is JSON or a string")
    parser.add_argument("--variables-json", help="variables as one JSON object")
    parser.add_argument("--journal", help="journal: an SQLite path (default "
                        ".stepflow/journal.db) or 'memory'")


def command(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    for warning in flow.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = load_run_config(args.config, args.flow)
    variables = parse_variables(args.var, args.variables_json)
    if args.inputs is not None:
        if args.max_concurrency < 1:
            raise InputError("--max-concurrency must be at least 1")
        inputs = list(read_jsonl(args.inputs))
        return asyncio.run(run_batch_command(args, flow, config, variables, inputs))
    input_value = single_input(args, flow)
    return asyncio.run(_single(args, flow, config, variables, input_value))


def single_input(args: argparse.Namespace, flow: Flow) -> JSON:
    """The run input of ``--input-file`` or ``--input`` (default ``{}``), checked against the
    flow's input schema."""
    if args.input_file is not None:
        input_value = load_input_file(args.input_file)
    elif args.input is not None:
        input_value = parse_input_json(args.input, "--input")
    else:
        input_value = {}
    check_input(flow, input_value)
    return input_value


def check_input(flow: Flow, value: JSON) -> None:
    """Reject an input that fails the flow's input schema, naming the field and the reason."""
    if flow.input_schema is None:
        return
    violations = flow.input_schema.violations(value)
    if violations:
        raise InputError(
            f"input does not match the flow's input schema: {describe(violations)}",
            Location(flow.source, field=f"input{violations[0].field[1:]}"),
        )


async def _single(args: argparse.Namespace, flow: Flow, config: Config, variables: JSONObject,
                  input_value: JSON) -> int:
    async with open_store(args.journal) as (journal, blobs):
        runtime = EmbeddedRuntime(config, journal, blobs, EmbeddedOptions())
        async with runtime:
            run_id = await runtime.submit(flow, input_value, variables)
            print(f"run id: {run_id}", file=sys.stderr)
            result = await runtime.wait(run_id)
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0 if result.ok else 1


async def run_batch_command(args: argparse.Namespace, flow: Flow, config: Config,
                            variables: JSONObject, inputs: Sequence[JSON]) -> int:
    """A batch on the embedded runtime: ``--output``, ``--max-concurrency``, ``--batch-id``
    and ``--journal`` of ``args``; results in input order."""
    out: IO[str] = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    bar = ProgressBar(len(inputs))
    if args.batch_id is None:
        batch_id = uuid.uuid4().hex
        print(f"batch id: {batch_id}", file=sys.stderr)
    else:
        batch_id = args.batch_id
    failed = 0
    try:
        async with open_store(args.journal) as (journal, blobs):
            runtime = EmbeddedRuntime(config, journal, blobs, EmbeddedOptions())
            async with runtime:
                batch = run_batch(runtime, flow, inputs, variables,
                                  max_concurrency=args.max_concurrency,
                                  batch_id=batch_id, resuming=args.batch_id is not None,
                                  on_progress=lambda p: bar.update(p.done, p.failed))
                async for _, result in batch:
                    failed += not result.ok
                    out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                    out.flush()
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    print(f"{len(inputs) - failed} succeeded, {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 1


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the config file the runs were started with")
    parser.add_argument("--journal", help="an SQLite journal path (default .stepflow/journal.db)")


def resume_command(args: argparse.Namespace) -> int:
    """Carry on every unfinished run of the journal (after a crash) and print their results."""
    config = load_run_config(args.config, None)

    async def go() -> int:
        failed = 0
        async with open_store(args.journal) as (journal, blobs):
            runtime = EmbeddedRuntime(config, journal, blobs, EmbeddedOptions())
            async with runtime:
                run_ids = await runtime.resume_unfinished()
                print(f"resuming {len(run_ids)} unfinished runs", file=sys.stderr)
                for run_id in run_ids:
                    result = await runtime.wait(run_id)
                    failed += not result.ok
                    print(json.dumps({"runId": run_id, **result.to_json()}, ensure_ascii=False))
        return 0 if failed == 0 else 1

    return asyncio.run(go())
