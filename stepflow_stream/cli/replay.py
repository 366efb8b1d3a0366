"""``replay`` (a run's timeline, the state at any event, a step-by-step walk, verification
against a flow) and ``runs diff``, on either runtime's journal.

Where the journal is: ``--config C`` whose ``stateStore`` is postgres reads the distributed
runtime's journal projection in PostgreSQL; otherwise ``--journal`` names an SQLite journal
(default ``.stepflow/journal.db``) or a journal dump (``*.jsonl``, see
:mod:`stepflow_stream.journal.dump`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg

from stepflow_stream.cli.inspect import describe, event_json, format_ms, print_state, state_json
from stepflow_stream.cli.loading import load_flow, load_run_config, open_store
from stepflow_stream.config import Config
from stepflow_stream.core.events import Event, FlowResult
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, compact_json
from stepflow_stream.core.rundiff import MISSING, Difference, diff_runs, json_diff, state_view
from stepflow_stream.core.state import RunState, apply, fold
from stepflow_stream.core.verify import verify_run
from stepflow_stream.errors import (
    InputError,
    Location,
    RunNotFoundError,
    ServiceUnavailableError,
)
from stepflow_stream.journal.base import BlobStore, Journal
from stepflow_stream.journal.dump import DUMP_SUFFIX, load_dump
from stepflow_stream.runtime.fork import read_run, recorded_flow

__all__ = [
    "add_diff_arguments",
    "add_replay_arguments",
    "add_store_arguments",
    "diff_command",
    "naming_run",
    "open_runs",
    "replay_command",
    "store_config",
]


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", help="an SQLite journal (default .stepflow/journal.db) or "
                        "a journal dump (*.jsonl)")
    parser.add_argument("--config", type=Path, help="a config whose stateStore is postgres: "
                        "read the distributed runtime's journal (and, for --verify, the "
                        "config whose routes the steps are checked against)")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id")
    parser.add_argument("--to", type=int, metavar="SEQ", help="stop after the event SEQ")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true")
    mode.add_argument("--step", action="store_true", help="walk the events one by one, "
                      "showing what each changes (Enter: next, c: continue to the end, q: quit; "
                      "read from stdin)")
    mode.add_argument("--verify", action="store_true", help="check the journal against the "
                      "flow: re-fold it, evaluate every step input again; exit 1 on a mismatch")
    parser.add_argument("--flow", type=Path, help="with --verify: the flow file to check "
                        "against (default: the flow the run was recorded with)")
    add_store_arguments(parser)


def add_diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--json", action="store_true")
    add_store_arguments(parser)


# Where runs are --------------------------------------------------------------------------------


def store_config(args: argparse.Namespace) -> Config | None:
    """The ``--config`` given, loaded; None without one."""
    return load_run_config(args.config, None) if args.config is not None else None


def _postgres_url(config: Config | None) -> str | None:
    store = config.state_store if config is not None else None
    if store is None or store.type != "postgres":
        return None
    if not store.database_url:
        raise InputError("a postgres stateStore needs 'databaseUrl'",
                         Location(config.source if config else None, field="stateStore"))
    return store.database_url


@contextlib.asynccontextmanager
async def open_runs(
    journal: str | None, config: Config | None
) -> AsyncIterator[tuple[Journal, BlobStore]]:
    """The journal and blob store runs are read from (see the module's docstring)."""
    url = _postgres_url(config)
    if url is not None:
        if journal is not None:
            raise InputError("--journal and a --config with a postgres stateStore name two "
                             "journals: give one")
        # Imported here: only the distributed runtime's journal needs the driver's pool.
        from stepflow_stream.journal.postgres import (
            PostgresBlobStore,
            PostgresDatabase,
            PostgresJournal,
        )

        try:
            database = await PostgresDatabase.connect(url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            where = config.source if config is not None else "the config"
            raise ServiceUnavailableError(f"cannot reach PostgreSQL ({where}, "
                                          f"stateStore.databaseUrl): {exc}") from None
        try:
            yield PostgresJournal(database), PostgresBlobStore(database)
        finally:
            await database.close()
        return
    if journal is not None and journal.endswith(DUMP_SUFFIX):
        yield await load_dump(Path(journal))
        return
    async with open_store(journal, must_exist=True) as store:
        yield store


@contextlib.contextmanager
def naming_run(run_id: str) -> Iterator[None]:
    """A missing journal reported as the run it was looked for in."""
    try:
        yield
    except RunNotFoundError as exc:
        if f"'{run_id}'" in exc.reason:
            raise
        raise RunNotFoundError(f"no run with id '{run_id}': {exc.reason}",
                               exc.location) from None


@dataclass(frozen=True, slots=True)
class _Recorded:
    events: list[Event]
    stored: FlowResult | None
    recorded_flow: Flow | None


async def _read(args: argparse.Namespace, config: Config | None, *,
                with_flow: bool) -> _Recorded:
    with naming_run(args.run_id):
        async with open_runs(args.journal, config) as (journal, blobs):
            return await _read_from(args, journal, blobs, with_flow=with_flow)


async def _read_from(args: argparse.Namespace, journal: Journal, blobs: BlobStore, *,
                     with_flow: bool) -> _Recorded:
    events = await read_run(journal, args.run_id)
    summary = await journal.get_run(args.run_id)
    flow = None
    if with_flow:
        state = fold(args.run_id, events[:1])
        try:
            flow = await recorded_flow(blobs, state.flow_id or "")
        except InputError:
            if args.flow is None:
                raise
    return _Recorded(events, summary.result if summary is not None else None, flow)


# replay ---------------------------------------------------------------------------------------


def replay_command(args: argparse.Namespace) -> int:
    if args.flow is not None and not args.verify:
        raise InputError("--flow is for --verify: the flow to check the run against")
    if args.verify and args.to is not None:
        raise InputError("--verify checks the whole run: leave out --to")
    config = store_config(args)
    recorded = asyncio.run(_read(args, config, with_flow=args.verify))
    events = recorded.events
    if args.verify:
        flow = load_flow(args.flow) if args.flow is not None else recorded.recorded_flow
        assert flow is not None
        return _verify(args, flow, recorded, config)
    if args.to is not None:
        if not 0 <= args.to < len(events):
            raise InputError(f"--to must be between 0 and {len(events) - 1} for this run, "
                             f"got {args.to}")
        events = events[: args.to + 1]
    if args.step:
        return _walk(args.run_id, events, sys.stdin, sys.stdout)
    state = fold(args.run_id, events)
    if args.json:
        print(json.dumps({"events": [event_json(e) for e in events],
                          "state": state_json(state)}, ensure_ascii=False, indent=2))
        return 0
    start = events[0].timestamp
    print(f"timeline of run {args.run_id} ({len(events)} events)")
    for event in events:
        print(f"  {event.seq:>5}  +{format_ms(event.timestamp - start):>9}  "
              f"{type(event).__name__:19} {describe(event)}")
    print()
    print(f"state after seq {events[-1].seq}:")
    print_state(state)
    return 0


def _walk(run_id: str, events: list[Event], stdin: IO[str], out: IO[str]) -> int:
    """``replay --step``: each event, then what it changed; a line of stdin between events."""
    interactive = stdin.isatty()
    out.write(f"run {run_id}: {len(events)} events. Enter: next event, c: continue to the "
              "end, q: quit\n")
    state = RunState(run_id)
    before = state_view(state)
    running = False
    for index, event in enumerate(events):
        apply(state, event)
        after = state_view(state)
        out.write(f"[{event.seq}] {type(event).__name__} {describe(event)}\n")
        for difference in json_diff(before, after):
            out.write(f"    {_change(difference)}\n")
        before = after
        if running or index == len(events) - 1:
            continue
        if interactive:
            out.write("> ")
        out.flush()
        answer = stdin.readline()
        if not answer or answer.strip().lower() in ("q", "quit"):
            left = len(events) - index - 1
            out.write(f"stopped after seq {event.seq} ({left} more events)\n")
            break
        running = answer.strip().lower() in ("c", "continue")
    out.write(f"\nstate after seq {state.next_seq - 1}:\n")
    out.flush()
    print_state(state)
    return 0


def _change(difference: Difference) -> str:
    return (f"{difference.path.lstrip('.')}: {_value(difference.before)} -> "
            f"{_value(difference.after)}")


def _value(value: JSON) -> str:
    if value is MISSING:
        return "(none)"
    text = compact_json(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _verify(args: argparse.Namespace, flow: Flow, recorded: _Recorded,
            config: Config | None) -> int:
    against = (str(args.flow) if args.flow is not None
               else f"its recorded flow {flow.label} ({flow.flow_id[:12]})")
    print(f"verifying run {args.run_id} ({len(recorded.events)} events) against {against}")
    report = verify_run(flow, recorded.events, recorded_flow=recorded.recorded_flow,
                        stored_result=recorded.stored,
                        router=config.routes if config is not None else None)
    for mismatch in report.mismatches:
        print(f"MISMATCH {mismatch}")
    state = report.state
    result = "stored result" if recorded.stored is not None else "no stored result"
    print(f"{report.inputs_checked} step inputs evaluated again; the journal folds to a "
          f"{state.status.value} run ({result})")
    if report.ok:
        print("verify: ok, the journal matches the flow")
        return 0
    print(f"verify: {len(report.mismatches)} mismatches")
    return 1


# runs diff ------------------------------------------------------------------------------------


def diff_command(args: argparse.Namespace) -> int:
    config = store_config(args)

    async def read() -> tuple[RunState, RunState]:
        with naming_run(args.run_a):
            async with open_runs(args.journal, config) as (journal, _):
                a = fold(args.run_a, await read_run(journal, args.run_a))
                b = fold(args.run_b, await read_run(journal, args.run_b))
        return a, b

    a, b = asyncio.run(read())
    differences = diff_runs(a, b)
    if args.json:
        print(json.dumps({"same": not differences, "differences": [
            {"path": d.path.lstrip("."),
             **({"a": d.before} if d.before is not MISSING else {}),
             **({"b": d.after} if d.after is not MISSING else {})}
            for d in differences]}, ensure_ascii=False, indent=2))
    elif differences:
        print(f"runs {args.run_a} (a) and {args.run_b} (b) differ in {len(differences)} places:")
        for difference in differences:
            print(f"  {_change(difference)}")
    else:
        print(f"runs {args.run_a} and {args.run_b} are the same: input, result, and "
              f"{len(a.steps)} steps' status, input, output and error")
    return 1 if differences else 0
