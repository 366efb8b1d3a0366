"""The scheduler: from a run's state and a command, the events that follow.

:func:`handle` turns a command into events; :func:`decide` derives the events that the
current state calls for (steps newly needed, started, skipped, retried; the run's end). Both
apply each event to the state as they emit it, so the state afterwards is exactly the fold of
the journal with those events appended: the caller appends them in the returned order.

Evaluation is lazy: a step is needed only when the output, a ``mustExecute`` flag or a needed
step's input asks for it, and an ``$if`` asks only for the branch it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from stepflow_stream.core.events import (
    CancelRun,
    Command,
    ErrorInfo,
    Event,
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
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.expressions import SKIPPED, Pending, Scope
from stepflow_stream.core.flow import Flow, Step
from stepflow_stream.core.jsonvalue import JSON, canonical_json
from stepflow_stream.core.schema import describe
from stepflow_stream.core.state import RunState, RunStatus, StepState, StepStatus, apply
from stepflow_stream.core.variables import REDACTED
from stepflow_stream.errors import ComponentError, ErrorCode

_OUTPUT = "$output"


class Router(Protocol):
    """Chooses the plugin for a component call (implemented by the config's routes)."""

    def route(self, component: str, input: JSON) -> tuple[str, str]:
        """``(plugin name, component name within the plugin)``; raises ComponentError."""
        ...


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What the scheduler needs besides state: the flow and how to route its components."""

    flow: Flow
    router: Router


def task_id_for(run_id: str, step_id: str, attempt: int) -> str:
    """Task ids are derived, not drawn, so a replayed decision gives the same id."""
    return f"{run_id}/{step_id}/{attempt}"


class _Emitter:
    __slots__ = ("events", "now", "state")

    def __init__(self, state: RunState, now: int) -> None:
        self.state = state
        self.now = now
        self.events: list[Event] = []

    def __call__(self, cls: type[Event], **fields: Any) -> None:
        if self.state.secrets:
            _redact_fields(fields, self.state.secrets)
        event = cls(self.state.run_id, self.state.next_seq, self.now, **fields)
        apply(self.state, event)
        self.events.append(event)


def handle(plan: RunPlan | None, state: RunState, command: Command, now: int) -> list[Event]:
    """The events a command causes, applied to ``state``; empty when it changes nothing.

    ``plan`` may be None only for a SubmitRun whose flow is unknown (it then fails the run).
    """
    emit = _Emitter(state, now)
    if isinstance(command, SubmitRun):
        if state.next_seq > 0:
            return []
        emit(
            RunCreated,
            flow_id=command.flow_id,
            input=command.input,
            variables=command.variables,
            parent_run_id=command.parent_run_id,
            parent_step_id=command.parent_step_id,
            batch_id=command.batch_id,
            batch_index=command.batch_index,
            forked_from_step=command.forked_from_step,
        )
        if plan is not None and plan.flow.input_schema is not None:
            violations = plan.flow.input_schema.violations(command.input)
            if violations:
                message = f"flow input does not match the input schema: {describe(violations)}"
                emit(RunFailed, error=ErrorInfo(ErrorCode.INVALID_INPUT, message))
                return emit.events
        if plan is not None and command.reused:
            _take_reused(plan, command, emit)
    elif isinstance(command, TaskResult):
        step_id = state.running_tasks.get(command.task_id)
        if step_id is None or state.status is not RunStatus.RUNNING or plan is None:
            return []
        _task_result(plan.flow.steps_by_id[step_id], state.steps[step_id], command, emit)
    elif isinstance(command, CancelRun):
        if state.terminal or state.cancel_requested or state.next_seq == 0:
            return []
        emit(RunCancelRequested, reason=command.reason)
    if plan is None:
        emit(RunFailed, error=ErrorInfo(ErrorCode.INTERNAL, f"unknown flow {state.flow_id}"))
        return emit.events
    _decide(plan, state, emit)
    return emit.events


def decide(plan: RunPlan, state: RunState, now: int) -> list[Event]:
    """The events the state calls for, applied to ``state``. Idempotent: a second call with
    no change in between returns nothing."""
    emit = _Emitter(state, now)
    _decide(plan, state, emit)
    return emit.events


def _take_reused(plan: RunPlan, command: SubmitRun, emit: _Emitter) -> None:
    """A fork starts with the parent's recorded outputs it reuses: completed steps, marked
    as reused, with task ids of attempt 0 (no component is called for them)."""
    reused = [step_id for step_id in command.reused if step_id in plan.flow.steps_by_id]
    if not reused:
        return
    emit(StepsNeeded, step_ids=tuple(reused))
    for step_id in reused:
        emit(StepCompleted, step_id=step_id, task_id=task_id_for(command.run_id, step_id, 0),
             output=command.reused[step_id], reused_from=command.parent_run_id)


def _task_result(step: Step, step_state: StepState, result: TaskResult, emit: _Emitter) -> None:
    task_id = result.task_id
    if result.error is not None:
        emit(
            StepFailed,
            step_id=step.id,
            task_id=task_id,
            attempt=step_state.attempt,
            error=result.error,
            retryable=result.retryable,
        )
        return
    if step.output_schema is not None:
        violations = step.output_schema.violations(result.output)
        if violations:
            message = f"output does not match the step's output schema: {describe(violations)}"
            error = ErrorInfo(ErrorCode.VALIDATION_FAILED, message)
            emit(StepFailed, step_id=step.id, task_id=task_id, attempt=step_state.attempt,
                 error=error, retryable=False)
            return
    emit(StepCompleted, step_id=step.id, task_id=task_id, output=result.output)


def _decide(plan: RunPlan, state: RunState, emit: _Emitter) -> None:
    if state.status is not RunStatus.RUNNING:
        return
    if state.cancel_requested:
        emit(RunCancelled, reason="cancelled by request")
        return
    flow = plan.flow
    if not state.scheduled:
        _rebuild_memo(flow, state, emit)
    dirty = state.dirty
    newly_needed: dict[str, None] = {}
    while state.status is RunStatus.RUNNING:
        if state.settled:
            _wake_waiters(flow, state)
        if not dirty:
            fresh = tuple(s for s in newly_needed if s not in state.steps)
            if not fresh:
                return
            newly_needed.clear()
            emit(StepsNeeded, step_ids=fresh)
            continue
        key = dirty.popleft()
        if key == _OUTPUT:
            _try_finish(flow, state, emit, newly_needed)
            continue
        step_state = state.steps[key]
        if step_state.status is StepStatus.FAILED:
            _settle_failure(flow.steps_by_id[key], step_state, emit)
        elif step_state.status is StepStatus.BLOCKED:
            _advance_blocked(plan, state, flow.steps_by_id[key], emit, newly_needed)


def _wake_waiters(flow: Flow, state: RunState) -> None:
    """Queue the keys that a settled step may unblock.

    A key whose expression has no ``$if``/``$coalesce`` waits for a fixed set of steps, so it is
    looked at again only when the last of them completes (or at once when one is skipped,
    which skips it). Branching keys may need new steps as soon as any one settles.
    """
    while state.settled:
        step_id = state.settled.popleft()
        waiters = state.waiters.pop(step_id, None)
        if not waiters:
            continue
        skipped = step_id in state.skipped
        for key in waiters:
            if skipped or _branching(flow, key):
                state.dirty.append(key)
                continue
            left = state.remaining.get(key, 1) - 1
            state.remaining[key] = left
            if left <= 0:
                state.dirty.append(key)


def _branching(flow: Flow, key: str) -> bool:
    return flow.output_branching if key == _OUTPUT else flow.steps_by_id[key].branching


def _rebuild_memo(flow: Flow, state: RunState, emit: _Emitter) -> None:
    """After a fold (or at the start) nothing is known of who waits: look at everything once."""
    state.scheduled = True
    state.waiters.clear()
    state.remaining.clear()
    state.dirty.clear()
    state.settled.clear()
    # At the first decision (a fork may have reused steps already), or after a fold.
    must = tuple(step.id for step in flow.steps
                 if step.must_execute and step.id not in state.steps)
    if must:
        emit(StepsNeeded, step_ids=must)
    state.dirty.extend(
        step_id
        for step_id, step_state in state.steps.items()
        if step_state.status in (StepStatus.BLOCKED, StepStatus.FAILED)
        and step_id not in state.dirty
    )
    state.dirty.append(_OUTPUT)


def _advance_blocked(
    plan: RunPlan,
    state: RunState,
    step: Step,
    emit: _Emitter,
    newly_needed: dict[str, None],
) -> None:
    """Skip or start a blocked step whose inputs are ready, or note what it waits for."""
    scope = Scope(state.input, state.visible_variables(), state.outputs, state.skipped)
    if step.skip is not None:
        condition = step.skip.evaluate(scope)
        if type(condition) is Pending:
            _wait(state, step.id, condition, newly_needed)
            return
        if condition is SKIPPED:
            emit(StepSkipped, step_id=step.id, reason="skip condition reads a skipped step")
            return
        if condition:
            emit(StepSkipped, step_id=step.id, reason="skip condition is true")
            return
    value = step.input.evaluate(scope)
    key = None if step.affinity is None else step.affinity.evaluate(scope)
    if type(value) is Pending or type(key) is Pending:
        # The affinity is waited for with the input, as if it were one more field of it.
        steps = frozenset().union(*(p.steps for p in (value, key) if type(p) is Pending))
        _wait(state, step.id, Pending(steps), newly_needed)
        return
    if value is SKIPPED:
        emit(StepSkipped, step_id=step.id, reason="input references a skipped step")
        return
    _start(plan, state, step, value, 1, _affinity_key(state, key), emit)


def _affinity_key(state: RunState, value: JSON) -> str | None:
    """The task key an affinity expression's value gives: a string as is, other JSON as its
    canonical text; none for null or a skipped reference (tasks are then keyed by run id).
    Secrets are redacted, as in recorded inputs: the journal never holds one."""
    if value is None or value is SKIPPED:
        return None
    if state.secrets:
        value = _redact(value, state.secrets)
    return value if isinstance(value, str) else canonical_json(value)


def _wait(state: RunState, key: str, pending: Pending, newly_needed: dict[str, None]) -> None:
    state.remaining[key] = len(pending.steps)
    for dep in sorted(pending.steps):
        state.waiters.setdefault(dep, {})[key] = None
        if dep not in state.steps:
            newly_needed[dep] = None


def _start(
    plan: RunPlan, state: RunState, step: Step, value: JSON, attempt: int,
    affinity: str | None, emit: _Emitter,
) -> None:
    task_id = task_id_for(state.run_id, step.id, attempt)
    if step.input_schema is not None:
        violations = step.input_schema.violations(value)
        if violations:
            message = f"input does not match the step's input schema: {describe(violations)}"
            emit(StepFailed, step_id=step.id, task_id=task_id, attempt=attempt,
                 error=ErrorInfo(ErrorCode.INVALID_INPUT, message), retryable=False)
            return
    try:
        plugin, component = plan.router.route(step.component, value)
    except ComponentError as exc:
        emit(StepFailed, step_id=step.id, task_id=task_id, attempt=attempt,
             error=ErrorInfo(exc.code, exc.message, exc.data), retryable=False)
        return
    emit(StepStarted, step_id=step.id, task_id=task_id, attempt=attempt, component=component,
         plugin=plugin, input=value, affinity=affinity)


def _redact_fields(fields: dict[str, Any], secrets: dict[str, JSON]) -> None:
    """Redact an event's values before it exists: a step input, a component's output (which
    may echo a secret it was given), the run's result and any error's message and data. The
    state is the fold of the events, so later steps see the redacted values too, as a replay
    would."""
    for name in ("input", "output", "result"):
        if name in fields:
            fields[name] = _redact(fields[name], secrets)
    error = fields.get("error")
    if isinstance(error, ErrorInfo):
        message = _redact(error.message, secrets)
        fields["error"] = ErrorInfo(error.code, message if isinstance(message, str) else REDACTED,
                                    _redact(error.data, secrets))


def _redact(value: JSON, secrets: dict[str, JSON]) -> JSON:
    """``value`` with every secret variable's value replaced: the journal never holds one.
    The runtime re-evaluates the step's input to call the component with the real values."""
    hidden = [v for v in secrets.values() if v is not None]
    if not hidden:
        return value

    def walk(item: JSON) -> JSON:
        if any(item == secret and type(item) is type(secret) for secret in hidden):
            return REDACTED
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str):
            for secret in hidden:
                if isinstance(secret, str) and secret and secret in item:
                    item = item.replace(secret, REDACTED)
        return item

    return walk(value)


def task_input(plan: RunPlan, state: RunState, step_id: str) -> JSON:
    """The input a started step's component is called with: what StepStarted recorded, or,
    when the run has secrets (recorded redacted), the input evaluated again from the state."""
    step_state = state.steps[step_id]
    if not state.secrets:
        return step_state.input
    scope = Scope(state.input, state.visible_variables(), state.outputs, state.skipped)
    return plan.flow.steps_by_id[step_id].input.evaluate(scope)


def _settle_failure(step: Step, step_state: StepState, emit: _Emitter) -> None:
    """Apply the step's ``onError`` to its failed attempt."""
    policy = step.on_error
    error = step_state.error or ErrorInfo(ErrorCode.INTERNAL, "step failed without an error")
    if (
        policy.action == "retry"
        and step_state.retryable
        and step_state.attempt <= policy.max_retries
    ):
        attempt = step_state.attempt + 1
        emit(StepStarted, step_id=step.id, task_id=task_id_for(emit.state.run_id, step.id,
                                                                attempt),
             attempt=attempt, component=step_state.component, plugin=step_state.plugin,
             input=step_state.input, affinity=step_state.affinity)
    elif policy.action == "useDefault":
        emit(StepCompleted, step_id=step.id, task_id=step_state.task_id or "",
             output=policy.default_value, from_default=True)
    elif policy.action == "skip":
        emit(StepSkipped, step_id=step.id, reason=f"failed and onError is skip: {error.message}")
    else:
        message = f"step '{step.id}' failed: {error.message}"
        emit(RunFailed, error=ErrorInfo(error.code, message, error.data))


def _try_finish(
    flow: Flow, state: RunState, emit: _Emitter, newly_needed: dict[str, None]
) -> None:
    """Complete the run when its output is ready and every mustExecute step has settled."""
    scope = Scope(state.input, state.visible_variables(), state.outputs, state.skipped,
                  skipped_as_null=True)
    value = flow.output.evaluate(scope)
    if type(value) is Pending:
        _wait(state, _OUTPUT, value, newly_needed)
        return
    unsettled = [
        step_id
        for step_id, step_state in state.steps.items()
        if step_state.status in (StepStatus.BLOCKED, StepStatus.RUNNING, StepStatus.FAILED)
        and flow.steps_by_id[step_id].must_execute
    ]
    if unsettled:
        _wait(state, _OUTPUT, Pending(frozenset(unsettled)), newly_needed)
        return
    if flow.output_schema is not None:
        violations = flow.output_schema.violations(value)
        if violations:
            message = f"flow output does not match the output schema: {describe(violations)}"
            emit(RunFailed, error=ErrorInfo(ErrorCode.VALIDATION_FAILED, message))
            return
    emit(RunCompleted, result=value)
