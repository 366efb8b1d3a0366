"""Forking a run: which of its recorded step outputs a new run from a given step can reuse.

A fork of run R from step S runs S and every step that reads it, directly or through others,
again, and takes the other steps R completed as done, with R's recorded outputs, instead of
calling their components. A step is reused only when that is what running it would repeat:
it completed in R with a component's output (not an ``onError`` default), its component in the
fork's flow is the one R's flow named, and its input and skip condition, evaluated with the
fork's input and the outputs reused before it, give what R recorded. So a fork with another
input (or flow) runs again whatever that input (or flow) changes, besides S and what follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepflow_stream.core.expressions import SKIPPED, Pending, Scope
from stepflow_stream.core.flow import Flow, Step
from stepflow_stream.core.jsonvalue import JSON, JSONObject, canonical_json
from stepflow_stream.core.state import RunState, StepStatus
from stepflow_stream.core.variables import REDACTED
from stepflow_stream.errors import InputError, Location

__all__ = ["ForkPlan", "downstream_of", "plan_fork"]


@dataclass(frozen=True, slots=True)
class ForkPlan:
    """What a fork reuses and what it runs again."""

    from_step: str
    reused: JSONObject
    """Recorded outputs the fork takes, by step id, in an order where each step comes after
    the steps it reads."""
    rerun: dict[str, str]
    """Steps the parent completed that the fork runs again, with the reason."""
    variables: JSONObject
    """The parent's recorded variables without the redacted secrets, which the runtime
    resolves again from its environment."""


def downstream_of(flow: Flow, step_id: str) -> frozenset[str]:
    """``step_id`` and every step that may read it, directly or through other steps."""
    readers: dict[str, list[str]] = {}
    for step in flow.steps:
        for dependency in step.dependencies():
            readers.setdefault(dependency, []).append(step.id)
    found = {step_id}
    stack = [step_id]
    while stack:
        for reader in readers.get(stack.pop(), ()):
            if reader not in found:
                found.add(reader)
                stack.append(reader)
    return frozenset(found)


def plan_fork(
    flow: Flow, parent: RunState, from_step: str, input: JSON, parent_flow: Flow | None = None
) -> ForkPlan:
    """The reuse of a fork of ``parent`` from ``from_step``, run with ``flow`` and ``input``.

    ``parent_flow`` is the flow the parent ran (default: ``flow``). Raises
    :class:`InputError` (field ``fromStep``) when ``from_step`` is no step of ``flow``."""
    if from_step not in flow.steps_by_id:
        known = ", ".join(step.id for step in flow.steps)
        raise InputError(f"no step '{from_step}' in the flow to fork from (its steps: "
                         f"{known})", Location(field="fromStep"))
    parent_flow = parent_flow or flow
    downstream = downstream_of(flow, from_step)
    outputs: JSONObject = {}
    scope = Scope(input, parent.variables, outputs, set())
    reused: JSONObject = {}
    rerun: dict[str, str] = {}
    for step in _dependency_order(flow):
        recorded = parent.steps.get(step.id)
        if recorded is None or recorded.status is not StepStatus.COMPLETED:
            continue
        if step.id in downstream:
            rerun[step.id] = ("the fork runs from it" if step.id == from_step
                              else f"it reads step '{from_step}'")
            continue
        reason = _why_not_reused(step, parent_flow, recorded.from_default, recorded.input, scope)
        if reason is not None:
            rerun[step.id] = reason
            continue
        reused[step.id] = recorded.output
        outputs[step.id] = recorded.output
    variables = {name: value for name, value in parent.variables.items() if value != REDACTED}
    return ForkPlan(from_step, reused, rerun, variables)


def _why_not_reused(step: Step, parent_flow: Flow, from_default: bool, recorded_input: JSON,
                    scope: Scope) -> str | None:
    if from_default:
        return "its output was its onError default, not a component's"
    before = parent_flow.steps_by_id.get(step.id)
    if before is None:
        return "the parent's flow has no such step"
    if before.component != step.component:
        return f"its component changed from '{before.component}' to '{step.component}'"
    if step.skip is not None:
        condition = step.skip.evaluate(scope)
        if type(condition) is Pending or condition is SKIPPED or condition:
            return "its skip condition no longer lets it run as recorded"
    value = step.input.evaluate(scope)
    if type(value) is Pending:
        return f"it reads step '{sorted(value.steps)[0]}', which runs again"
    if value is SKIPPED or canonical_json(value) != canonical_json(recorded_input):
        return "its input differs from the recorded one"
    return None


def _dependency_order(flow: Flow) -> list[Step]:
    """The flow's steps, each after every step it may read (the loader rejects cycles)."""
    ordered: list[Step] = []
    placed: set[str] = set()

    def place(step: Step) -> None:
        stack = [(step, sorted(step.dependencies()))]
        while stack:
            current, pending = stack[-1]
            if pending:
                dependency = pending.pop()
                if dependency not in placed and dependency in flow.steps_by_id:
                    placed.add(dependency)
                    stack.append((flow.steps_by_id[dependency],
                                  sorted(flow.steps_by_id[dependency].dependencies())))
                continue
            stack.pop()
            ordered.append(current)

    for step in flow.steps:
        if step.id not in placed:
            placed.add(step.id)
            place(step)
    return ordered
