"""Reading a recorded run back for replay and fork: its events, its flow, and a fork's plan.

Both runtimes fork the same way: the parent's journal (SQLite, a dump, or the PostgreSQL
projection) is folded, :func:`~stepflow_stream.core.fork.plan_fork` says which recorded
outputs the new run reuses, and the new run is submitted with them (``SubmitRun.reused``):
the scheduler records them as completed, reused steps, and runs the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepflow_stream.core.events import Event
from stepflow_stream.core.flow import Flow, parse_flow
from stepflow_stream.core.fork import ForkPlan, plan_fork
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.state import RunState, fold
from stepflow_stream.errors import FlowError, InputError, RunNotFoundError
from stepflow_stream.journal.base import BlobStore, Journal

__all__ = ["Fork", "prepare_fork", "read_run", "recorded_flow"]


@dataclass(frozen=True, slots=True)
class Fork:
    """A fork ready to submit: the parent, the flow and input of the new run, its plan."""

    parent: RunState
    flow: Flow
    input: JSON
    plan: ForkPlan


async def read_run(journal: Journal, run_id: str) -> list[Event]:
    """The run's events; :class:`RunNotFoundError` naming the id when it has none."""
    events = await journal.read(run_id)
    if not events:
        raise RunNotFoundError(f"no run with id '{run_id}' in the journal")
    return events


async def recorded_flow(blobs: BlobStore, flow_id: str) -> Flow:
    """The flow a run was recorded with (the runtimes store each flow as a blob)."""
    try:
        document = await blobs.get(flow_id)
    except KeyError:
        raise InputError(f"the run's flow {flow_id[:12]} is in no blob: give the flow file "
                         "with --flow") from None
    try:
        return parse_flow(document, source=f"flow {flow_id[:12]}")
    except FlowError as exc:
        raise InputError(f"the run's recorded flow {flow_id[:12]} no longer loads: "
                         f"{exc.reason}") from None


async def prepare_fork(
    journal: Journal,
    blobs: BlobStore,
    run_id: str,
    from_step: str,
    *,
    flow: Flow | None = None,
    input: JSON = None,
    replace_input: bool = False,
) -> Fork:
    """The fork of run ``run_id`` from ``from_step``, with ``flow`` (default: the run's own)
    and, when ``replace_input``, ``input`` instead of the run's input."""
    parent = fold(run_id, await read_run(journal, run_id))
    try:
        parent_flow = await recorded_flow(blobs, parent.flow_id or "")
    except InputError:
        if flow is None:
            raise
        parent_flow = flow
    flow = flow or parent_flow
    new_input = input if replace_input else parent.input
    plan = plan_fork(flow, parent, from_step, new_input, parent_flow)
    return Fork(parent, flow, new_input, plan)
