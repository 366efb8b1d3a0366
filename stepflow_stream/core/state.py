"""Run state and the reducer: ``state = fold(apply, events)``.

``apply`` is the only code that changes a :class:`RunState`. It ignores an event whose ``seq``
is already applied (so re-delivered events change nothing) and refuses a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    FlowResult,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepsNeeded,
    StepStarted,
)
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import JournalError


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepStatus(StrEnum):
    BLOCKED = "blocked"
    """Needed, waiting for the steps its input or skip condition reads."""
    RUNNING = "running"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(slots=True)
class StepState:
    """What the journal says of one needed step."""

    status: StepStatus = StepStatus.BLOCKED
    attempt: int = 0
    task_id: str | None = None
    component: str | None = None
    plugin: str | None = None
    input: JSON = None
    affinity: str | None = None
    """The affinity key its StepStarted recorded; a retry keeps it."""
    output: JSON = None
    error: ErrorInfo | None = None
    retryable: bool = False
    from_default: bool = False
    reused_from: str | None = None
    """In a fork: the run whose recorded output the step took instead of running."""
    skip_reason: str | None = None
    needed_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None


@dataclass(slots=True)
class RunState:
    """A run as folded from its journal."""

    run_id: str
    next_seq: int = 0
    status: RunStatus = RunStatus.PENDING
    flow_id: str | None = None
    input: JSON = None
    variables: JSONObject = field(default_factory=dict)
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    forked_from_step: str | None = None
    """In a fork of ``parent_run_id``: the step from which the fork runs again."""
    created_at: int | None = None
    finished_at: int | None = None
    cancel_requested: bool = False
    result: FlowResult | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    """Needed steps by id, in the order they became needed."""
    outputs: dict[str, JSON] = field(default_factory=dict)
    """Outputs of completed steps: what ``$step`` references read."""
    skipped: set[str] = field(default_factory=set)
    running_tasks: dict[str, str] = field(default_factory=dict)
    """Task id to step id, for the tasks whose results are still awaited."""
    secrets: dict[str, JSON] = field(default_factory=dict, compare=False, repr=False)
    """Secret variable values, supplied by the runtime: the journal holds them redacted."""
    # Scheduler memo, not journal state: which keys (step ids, or the output) wait for which
    # steps, and which keys need another look. It makes each decision cost what changed rather
    # than the size of the flow; after a fold it is empty and the scheduler rebuilds it.
    scheduled: bool = field(default=False, compare=False, repr=False)
    waiters: dict[str, dict[str, None]] = field(default_factory=dict, compare=False, repr=False)
    remaining: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    dirty: deque[str] = field(default_factory=deque, compare=False, repr=False)
    settled: deque[str] = field(default_factory=deque, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def visible_variables(self) -> JSONObject:
        """The variables expressions see: the journal's, with secrets filled in."""
        return {**self.variables, **self.secrets} if self.secrets else self.variables


def apply(state: RunState, event: Event) -> RunState:
    """Fold one event into ``state`` (in place) and return it.

    An event with a ``seq`` below ``state.next_seq`` was applied already and changes nothing;
    one above it means a gap in the journal and raises :class:`JournalError`.
    """
    if event.seq != state.next_seq:
        if event.seq < state.next_seq:
            return state
        raise JournalError(
            f"run {state.run_id}: expected event seq {state.next_seq}, got {event.seq}"
        )
    if event.run_id != state.run_id:
        raise JournalError(f"run {state.run_id}: got an event of run {event.run_id}")
    _APPLY[type(event)](state, event)
    state.next_seq += 1
    return state


def fold(run_id: str, events: Iterable[Event]) -> RunState:
    """The state a journal describes."""
    state = RunState(run_id)
    for event in events:
        apply(state, event)
    return state


def _run_created(state: RunState, event: RunCreated) -> None:
    state.status = RunStatus.RUNNING
    state.flow_id = event.flow_id
    state.input = event.input
    state.variables = event.variables
    state.parent_run_id = event.parent_run_id
    state.parent_step_id = event.parent_step_id
    state.batch_id = event.batch_id
    state.batch_index = event.batch_index
    state.forked_from_step = event.forked_from_step
    state.created_at = event.timestamp


def _steps_needed(state: RunState, event: StepsNeeded) -> None:
    for step_id in event.step_ids:
        if step_id not in state.steps:
            state.steps[step_id] = StepState(needed_at=event.timestamp)
            state.dirty.append(step_id)



def _step(state: RunState, step_id: str) -> StepState:
    step = state.steps.get(step_id)
    if step is None:
        step = state.steps[step_id] = StepState()
    return step


def _step_started(state: RunState, event: StepStarted) -> None:
    step = _step(state, event.step_id)
    step.status = StepStatus.RUNNING
    step.attempt = event.attempt
    step.task_id = event.task_id
    step.component = event.component
    step.plugin = event.plugin
    step.input = event.input
    step.affinity = event.affinity
    step.error = None
    step.started_at = event.timestamp
    state.running_tasks[event.task_id] = event.step_id


def _step_completed(state: RunState, event: StepCompleted) -> None:
    step = _step(state, event.step_id)
    step.status = StepStatus.COMPLETED
    step.output = event.output
    step.from_default = event.from_default
    step.reused_from = event.reused_from
    step.finished_at = event.timestamp
    state.outputs[event.step_id] = event.output
    state.running_tasks.pop(event.task_id, None)
    state.settled.append(event.step_id)


def _step_failed(state: RunState, event: StepFailed) -> None:
    step = _step(state, event.step_id)
    step.status = StepStatus.FAILED
    step.attempt = event.attempt
    step.error = event.error
    step.retryable = event.retryable
    step.finished_at = event.timestamp
    state.running_tasks.pop(event.task_id, None)
    state.dirty.append(event.step_id)


def _step_skipped(state: RunState, event: StepSkipped) -> None:
    step = _step(state, event.step_id)
    step.status = StepStatus.SKIPPED
    step.skip_reason = event.reason
    step.finished_at = event.timestamp
    state.skipped.add(event.step_id)
    if step.task_id is not None:
        state.running_tasks.pop(step.task_id, None)
    state.settled.append(event.step_id)


def _finish(state: RunState, status: RunStatus, result: FlowResult, timestamp: int) -> None:
    state.status = status
    state.result = result
    state.finished_at = timestamp
    state.running_tasks.clear()


def _run_completed(state: RunState, event: RunCompleted) -> None:
    _finish(state, RunStatus.COMPLETED, FlowResult(result=event.result), event.timestamp)


def _run_failed(state: RunState, event: RunFailed) -> None:
    _finish(state, RunStatus.FAILED, FlowResult(error=event.error), event.timestamp)


def _cancel_requested(state: RunState, event: RunCancelRequested) -> None:
    state.cancel_requested = True


def _run_cancelled(state: RunState, event: RunCancelled) -> None:
    error = ErrorInfo("CANCELLED", event.reason or "run cancelled")
    _finish(state, RunStatus.CANCELLED, FlowResult(error=error), event.timestamp)


_APPLY: dict[type[Event], Callable[[RunState, Any], None]] = {
    RunCreated: _run_created,
    StepsNeeded: _steps_needed,
    StepStarted: _step_started,
    StepCompleted: _step_completed,
    StepFailed: _step_failed,
    StepSkipped: _step_skipped,
    RunCompleted: _run_completed,
    RunFailed: _run_failed,
    RunCancelRequested: _cancel_requested,
    RunCancelled: _run_cancelled,
}
