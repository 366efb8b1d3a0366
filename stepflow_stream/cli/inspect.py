"""``runs list`` and ``runs show``: looking at runs through their journals (and how runs,
states and events are printed, which ``replay`` shares)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
from typing import Any

from stepflow_stream.cli.loading import open_store
from stepflow_stream.core.events import ErrorInfo, Event, FlowResult
from stepflow_stream.core.jsonvalue import JSONObject
from stepflow_stream.core.state import RunState, RunStatus, StepState, fold
from stepflow_stream.errors import RunNotFoundError
from stepflow_stream.journal.base import RunSummary


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=[s.value for s in RunStatus])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--journal", help="an SQLite journal path (default .stepflow/journal.db)")


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--journal", help="an SQLite journal path (default .stepflow/journal.db)")


def list_command(args: argparse.Namespace) -> int:
    async def go() -> list[RunSummary]:
        async with open_store(args.journal, must_exist=True) as (journal, _):
            status = RunStatus(args.status) if args.status else None
            return await journal.list_runs(status=status, limit=args.limit, offset=args.offset)

    runs = asyncio.run(go())
    if args.json:
        for run in runs:
            print(json.dumps(summary_json(run), ensure_ascii=False))
        return 0
    print(f"{'RUN ID':34} {'STATUS':10} {'CREATED':23} {'DURATION':>10}  FLOW")
    for run in runs:
        duration = format_ms(run.finished_at - run.created_at) if run.finished_at else "-"
        print(f"{run.run_id:34} {run.status.value:10} {_time(run.created_at):23} "
              f"{duration:>10}  {run.flow_id[:12]}")
    return 0


async def _load(journal_path: str | None, run_id: str) -> list[Event]:
    try:
        async with open_store(journal_path, must_exist=True) as (journal, _):
            events = await journal.read(run_id)
    except RunNotFoundError as exc:
        raise RunNotFoundError(f"no run with id '{run_id}': {exc.reason}", exc.location) from None
    if not events:
        raise RunNotFoundError(f"no run with id '{run_id}' in the journal")
    return events


def show_command(args: argparse.Namespace) -> int:
    events = asyncio.run(_load(args.journal, args.run_id))
    state = fold(args.run_id, events)
    if args.json:
        print(json.dumps(state_json(state), ensure_ascii=False, indent=2))
        return 0
    print_state(state)
    return 0


def print_state(state: RunState) -> None:
    print(f"run {state.run_id}: {state.status.value}")
    print(f"  flow     {state.flow_id}")
    if state.created_at is not None:
        print(f"  created  {_time(state.created_at)}")
    if state.finished_at is not None and state.created_at is not None:
        print(f"  duration {format_ms(state.finished_at - state.created_at)}")
    if state.forked_from_step is not None:
        print(f"  fork of  {state.parent_run_id} from step {state.forked_from_step}")
    elif state.parent_run_id:
        print(f"  parent   {state.parent_run_id} (step {state.parent_step_id})")
    print(f"  {'STEP':24} {'STATUS':10} {'ATTEMPT':>7} {'DURATION':>10}  DETAIL")
    for step_id, step in state.steps.items():
        print(f"  {step_id:24} {step.status.value:10} {step.attempt:>7} "
              f"{_step_duration(step):>10}  {_step_detail(step)}")
    if state.result is not None:
        print(f"  result   {json.dumps(state.result.to_json(), ensure_ascii=False)}")


def _step_duration(step: StepState) -> str:
    if step.started_at is not None and step.finished_at is not None:
        return format_ms(step.finished_at - step.started_at)
    return "-"


def _step_detail(step: StepState) -> str:
    if step.error is not None:
        return f"{step.error.code}: {step.error.message}"
    if step.skip_reason:
        return step.skip_reason
    if step.from_default:
        return "onError default used"
    if step.reused_from is not None:
        return f"reused from run {step.reused_from}"
    return step.component or ""


def describe(event: Event) -> str:
    """The event's fields as one line of JSON, without those left unset (None or false)."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
              if f.name not in ("run_id", "seq", "timestamp")
              and not (f.default in (None, False) and getattr(event, f.name) == f.default)}
    reused_from = fields.pop("reused_from", None)
    text = json.dumps(_jsonable(fields), ensure_ascii=False)
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"reused from run {reused_from}: {text}" if reused_from else text


def _jsonable(value: Any) -> Any:
    if isinstance(value, ErrorInfo | FlowResult):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def event_json(event: Event) -> JSONObject:
    fields = {f.name: _jsonable(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return {"type": type(event).__name__, **fields}


def summary_json(run: RunSummary) -> JSONObject:
    return {
        "runId": run.run_id,
        "flowId": run.flow_id,
        "status": run.status.value,
        "createdAt": run.created_at,
        "finishedAt": run.finished_at,
        "result": run.result.to_json() if run.result else None,
        "parentRunId": run.parent_run_id,
        "batchId": run.batch_id,
        "batchIndex": run.batch_index,
    }


def state_json(state: RunState) -> JSONObject:
    return {
        "runId": state.run_id,
        "flowId": state.flow_id,
        "status": state.status.value,
        "nextSeq": state.next_seq,
        "input": state.input,
        "variables": state.variables,
        "createdAt": state.created_at,
        "finishedAt": state.finished_at,
        "parentRunId": state.parent_run_id,
        "forkedFromStep": state.forked_from_step,
        "result": state.result.to_json() if state.result else None,
        "steps": {
            step_id: {
                "status": step.status.value,
                "attempt": step.attempt,
                "component": step.component,
                "plugin": step.plugin,
                "input": step.input,
                "output": step.output,
                "error": step.error.to_json() if step.error else None,
                "skipReason": step.skip_reason,
                "fromDefault": step.from_default,
                "reusedFrom": step.reused_from,
                "startedAt": step.started_at,
                "finishedAt": step.finished_at,
            }
            for step_id, step in state.steps.items()
        },
    }


def format_ms(value: int) -> str:
    return f"{value} ms"


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
