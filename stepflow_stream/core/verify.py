"""Verifying a recorded run against a flow: does the journal still say what the flow says?

:func:`verify_run` folds the journal event by event and, where a step started, evaluates the
step's input (and skip condition) again, with the flow given and the state the journal had
then; it compares each with what was recorded. Any difference means the flow changed since
the run (or evaluation is not deterministic): a step whose input or skip condition gives
another value, a step the run has and the flow lacks (or the reverse), a component changed
or routed elsewhere, a flow output that reads otherwise. It also checks that the journal folds
to the result the run index stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stepflow_stream.core.events import (
    Event,
    FlowResult,
    StepSkipped,
    StepStarted,
)
from stepflow_stream.core.expressions import SKIPPED, Pending, Scope
from stepflow_stream.core.flow import Flow, Step
from stepflow_stream.core.jsonvalue import JSON, compact_json
from stepflow_stream.core.rundiff import MISSING, json_diff, same_json
from stepflow_stream.core.scheduler import Router
from stepflow_stream.core.state import RunState, RunStatus, apply
from stepflow_stream.errors import ComponentError, JournalError

__all__ = ["Mismatch", "Verification", "verify_run"]

_SHOWN_PER_VALUE = 3
"""Differing paths reported per compared value: the first few tell what changed."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing the journal and the flow disagree on: a step (None: the run) and a field
    (``input.text``, ``skip``, ``component``, ``step``, ``output...``, ``result``)."""

    step: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"step '{self.step}' field '{self.field}'" if self.step is not None \
            else f"run field '{self.field}'"
        return f"{where}: {self.message}"


@dataclass(slots=True)
class Verification:
    """What :func:`verify_run` found."""

    state: RunState
    """The journal's fold (as far as it could go)."""
    inputs_checked: int = 0
    """Step inputs evaluated again and compared."""
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify_run(
    flow: Flow,
    events: Sequence[Event],
    *,
    recorded_flow: Flow | None = None,
    stored_result: FlowResult | None = None,
    router: Router | None = None,
) -> Verification:
    """Check the run of ``events`` against ``flow``.

    ``recorded_flow`` is the flow the run was recorded with, when known: steps added to or
    removed from it and changed components are reported by name. ``stored_result`` is the
    run index's result, compared with the fold's. With a ``router`` each step's component is
    routed again and compared with the plugin and component the run called.
    """
    run_id = events[0].run_id if events else ""
    report = Verification(RunState(run_id))
    found = report.mismatches
    state = report.state
    missing: set[str] = set()
    for event in events:
        if type(event) is StepStarted:
            step = flow.steps_by_id.get(event.step_id)
            if step is None:
                if event.step_id not in missing:
                    missing.add(event.step_id)
                    found.append(Mismatch(event.step_id, "step",
                                          "the run ran it; the flow has no such step"))
            elif event.attempt == 1:  # a retry repeats the first attempt's input
                report.inputs_checked += 1
                found += _check_started(step, event, _scope(state), recorded_flow, router)
        elif type(event) is StepSkipped:
            step = flow.steps_by_id.get(event.step_id)
            if step is not None:
                found += _check_skipped(step, event, _scope(state))
        try:
            apply(state, event)
        except JournalError as exc:
            found.append(Mismatch(None, "journal", str(exc)))
            return report
    found += _check_steps(flow, recorded_flow, state, missing)
    found += _check_result(flow, state, stored_result)
    return report


def _scope(state: RunState, *, final: bool = False) -> Scope:
    return Scope(state.input, state.variables, state.outputs, state.skipped,
                 skipped_as_null=final)


def _check_started(step: Step, event: StepStarted, scope: Scope, recorded_flow: Flow | None,
                   router: Router | None) -> list[Mismatch]:
    found: list[Mismatch] = []
    before = recorded_flow.steps_by_id.get(step.id) if recorded_flow is not None else None
    if before is not None and before.component != step.component:
        found.append(Mismatch(step.id, "component", f"the run's flow had '{before.component}', "
                              f"the flow has '{step.component}'"))
    elif router is not None:
        try:
            routed = router.route(step.component, event.input)
        except ComponentError as exc:
            found.append(Mismatch(step.id, "component", exc.message))
        else:
            if routed != (event.plugin, event.component):
                found.append(Mismatch(
                    step.id, "component",
                    f"'{step.component}' routes to plugin '{routed[0]}' component "
                    f"'{routed[1]}'; the run called plugin '{event.plugin}' component "
                    f"'{event.component}'"))
    if step.skip is not None:
        condition = step.skip.evaluate(scope)
        if type(condition) is not Pending and (condition is SKIPPED or condition):
            found.append(Mismatch(step.id, "skip", "the run ran it; its skip condition now "
                                  "skips it"))
    value = step.input.evaluate(scope)
    found += _compare(step.id, "input", event.input, value)
    return found


def _check_skipped(step: Step, event: StepSkipped, scope: Scope) -> list[Mismatch]:
    """A step the run skipped because of its skip condition must still be skipped by it."""
    if step.skip is None or event.reason != "skip condition is true":
        return []
    condition = step.skip.evaluate(scope)
    if type(condition) is Pending:
        return [Mismatch(step.id, "skip", f"its skip condition reads "
                         f"{_steps(condition)}, which had not settled when the run skipped it")]
    if condition is SKIPPED or condition:
        return []
    return [Mismatch(step.id, "skip", "the run skipped it; its skip condition is now false")]


def _compare(step_id: str | None, name: str, recorded: JSON, value: JSON) -> list[Mismatch]:
    if type(value) is Pending:
        return [Mismatch(step_id, name, f"it now reads {_steps(value)}, which the run had not "
                         "completed at that point")]
    if value is SKIPPED:
        return [Mismatch(step_id, name, "it now reads a skipped step, so it would be skipped")]
    differences = json_diff(recorded, value)
    found = [
        Mismatch(step_id, f"{name}{d.path}",
                 f"recorded {_show(d.before)}, evaluated now {_show(d.after)}")
        for d in differences[:_SHOWN_PER_VALUE]
    ]
    if len(differences) > _SHOWN_PER_VALUE:
        found.append(Mismatch(step_id, name, f"and {len(differences) - _SHOWN_PER_VALUE} "
                              "more differences"))
    return found


def _check_steps(flow: Flow, recorded_flow: Flow | None, state: RunState,
                 missing: set[str]) -> list[Mismatch]:
    """Steps added to the flow, and removed ones the run did not start (those that it did are
    reported where they started)."""
    found = [Mismatch(step_id, "step", "the run needed it; the flow has no such step")
             for step_id in state.steps
             if step_id not in flow.steps_by_id and step_id not in missing]
    if recorded_flow is None:
        return found
    found += [Mismatch(step.id, "step", "the flow has it; the run's flow had no such step")
              for step in flow.steps if step.id not in recorded_flow.steps_by_id]
    found += [Mismatch(step.id, "step", "the run's flow had it; the flow has no such step")
              for step in recorded_flow.steps
              if step.id not in flow.steps_by_id and step.id not in state.steps]
    return found


def _check_result(flow: Flow, state: RunState, stored: FlowResult | None) -> list[Mismatch]:
    found: list[Mismatch] = []
    if stored is not None and (state.result is None
                               or not same_json(stored.to_json(), state.result.to_json())):
        folded = state.result.to_json() if state.result is not None else None
        found.append(Mismatch(None, "result", f"the journal folds to {_show(folded)}, the run "
                              f"index holds {_show(stored.to_json())}"))
    if state.status is RunStatus.COMPLETED and state.result is not None:
        value = flow.output.evaluate(_scope(state, final=True))
        found += _compare(None, "output", state.result.result, value)
    return found


def _steps(pending: Pending) -> str:
    return ", ".join(f"step '{s}'" for s in sorted(pending.steps))


def _show(value: JSON) -> str:
    if value is MISSING:
        return "nothing"
    text = compact_json(value)
    return text if len(text) <= 80 else text[:77] + "..."
