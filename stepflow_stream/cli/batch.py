"""``stepflow-stream batch submit``: one run per line of a JSON Lines file, results written in
input order, with a live progress bar; resumable by batch id.

With a config whose runtime is ``kafka``, the runs go to the cluster: item *i* of batch *B* is
the run ``B-i`` (:func:`batch_run_id`), so submitting the batch again with ``--batch-id B``
finds the items already done in the run index, writes their results without running them, and
submits the rest (an item accepted but not finished is submitted again, which starts nothing
new: the orchestrator knows the run id). Otherwise the batch runs on the embedded runtime, as
``run --inputs`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from stepflow_stream.cli import run
from stepflow_stream.cli.loading import load_flow, load_run_config, parse_variables, read_jsonl
from stepflow_stream.cli.progress import ProgressBar
from stepflow_stream.config import Config
from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.distributed.client import DistributedClient, batch_run_id
from stepflow_stream.distributed.options import DistributedOptions, distributed_options
from stepflow_stream.errors import InputError

__all__ = ["add_submit_arguments", "submit_command"]

_CHUNK = 500
"""Most items sent to Kafka in one go while the window has room."""


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", type=Path, help="the flow file (YAML or JSON)")
    parser.add_argument("--inputs", type=Path, required=True,
                        help="a JSON Lines file: one run per line")
    parser.add_argument("--output", type=Path,
                        help="where results go, one JSON line per input in input order "
                        "(default: stdout)")
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="runs in flight at once (default 64)")
    parser.add_argument("--batch-id", help="resume this batch (the id printed when it "
                        "started): items already done are not run again")
    parser.add_argument("--config", type=Path, help="the config file; with 'runtime: "
                        "{type: kafka}' the batch runs on that cluster")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable (repeatable); VALUE is JSON or a string")
    parser.add_argument("--variables-json", help="variables as one JSON object")
    parser.add_argument("--journal", help="embedded runtime only: an SQLite journal path "
                        "(default .stepflow/journal.db)")


def submit_command(args: argparse.Namespace) -> int:
    if args.max_concurrency < 1:
        raise InputError("--max-concurrency must be at least 1")
    if args.batch_id is not None and not args.batch_id.strip():
        raise InputError("--batch-id must not be empty")
    flow = load_flow(args.flow)
    for warning in flow.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = load_run_config(args.config, args.flow)
    variables = parse_variables(args.var, args.variables_json)
    inputs = list(read_jsonl(args.inputs))
    for number, item in enumerate(inputs, start=1):
        try:
            run.check_input(flow, item)
        except InputError as exc:
            raise InputError(f"{args.inputs}: item {number}: {exc}") from None
    if config.runtime.type != "kafka":
        args.input = args.input_file = None
        return asyncio.run(run.run_batch_command(args, flow, config, variables, inputs))
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_distributed(args, flow, config, distributed_options(config),
                                    variables, inputs))


async def _distributed(args: argparse.Namespace, flow: Flow, config: Config,
                       options: DistributedOptions, variables: JSONObject,
                       inputs: Sequence[JSON]) -> int:
    batch_id = args.batch_id or uuid.uuid4().hex
    print(f"batch id: {batch_id}", file=sys.stderr, flush=True)
    out: IO[str] = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        async with DistributedClient(options, config) as client:
            done = await _finished(client, batch_id) if args.batch_id else {}
            if done:
                print(f"{len(done)} of {len(inputs)} items already done", file=sys.stderr)
            batch = _Batch(client, flow, inputs, variables, batch_id, done, out)
            await batch.run(args.max_concurrency)
    finally:
        if out is not sys.stdout:
            out.close()
    failed = batch.failed
    print(f"{len(inputs) - failed} succeeded, {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 1


async def _finished(client: DistributedClient, batch_id: str) -> dict[int, FlowResult]:
    assert client.database is not None
    rows = await client.database.pool.fetch(
        "SELECT batch_index, result FROM runs "
        "WHERE batch_id = $1 AND finished_at IS NOT NULL AND result IS NOT NULL",
        batch_id,
    )
    return {row["batch_index"]: FlowResult.from_json(json.loads(row["result"]))
            for row in rows}


class _Batch:
    """Keeps up to N runs in flight and writes results in input order as they are known."""

    def __init__(self, client: DistributedClient, flow: Flow, inputs: Sequence[JSON],
                 variables: JSONObject, batch_id: str, done: dict[int, FlowResult],
                 out: IO[str]) -> None:
        self.client = client
        self.flow = flow
        self.inputs = inputs
        self.variables = variables
        self.batch_id = batch_id
        self.results: dict[int, FlowResult] = dict(done)
        self.out = out
        self.written = 0
        self.failed = sum(not result.ok for result in done.values())
        self.progress = ProgressBar(len(inputs), already_done=len(done))

    async def run(self, window: int) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        todo = [i for i in range(len(self.inputs)) if i not in self.results]
        await self.client.record_batch(self.batch_id, self.flow.flow_id, len(self.inputs))
        self._write_ready()
        position = 0
        try:
            while position < len(todo) or in_flight:
                room = min(window - len(in_flight), _CHUNK)
                chunk = todo[position:position + room]
                position += len(chunk)
                if chunk:
                    await self.client.submit_many(
                        self.flow, [self.inputs[i] for i in chunk], self.variables,
                        batch_id=self.batch_id, indexes=chunk, batch_size=len(self.inputs))
                    in_flight |= {asyncio.create_task(self._wait(i)) for i in chunk}
                if in_flight:
                    finished, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()  # a failure to wait is the batch's failure
                    self._write_ready()
        finally:
            for task in in_flight:
                task.cancel()
            self.progress.close()

    async def _wait(self, index: int) -> None:
        result = self.results[index] = await self.client.wait(batch_run_id(self.batch_id, index))
        self.failed += not result.ok

    def _write_ready(self) -> None:
        while self.written in self.results:
            result = self.results.pop(self.written)
            self.out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            self.written += 1
        self.out.flush()
        self.progress.update(self.written + len(self.results), self.failed)
