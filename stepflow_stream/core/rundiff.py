"""Differences between JSON values, run states and runs, named by path.

``replay --step`` shows what each event changed (:func:`state_view` before and after, through
:func:`json_diff`); ``runs diff`` compares two runs step by step (:func:`diff_runs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepflow_stream.core.jsonvalue import JSON, JSONObject, canonical_json
from stepflow_stream.core.state import RunState, StepState, StepStatus

__all__ = ["MISSING", "Difference", "diff_runs", "json_diff", "same_json", "state_view"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Where one side of a difference has no value at that path."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One value that differs: at ``path`` (``""`` is the whole value, ``.a[0]`` a part of
    it), ``before`` on the first side and ``after`` on the second (:data:`MISSING` if absent)."""

    path: str
    before: JSON
    after: JSON


def same_json(a: JSON, b: JSON) -> bool:
    """Equal as JSON: key order does not count, types do (``1``, ``1.0`` and ``true`` differ)."""
    return a is b or canonical_json(a) == canonical_json(b)


def json_diff(before: JSON, after: JSON, path: str = "") -> list[Difference]:
    """Every leaf where ``before`` and ``after`` differ, objects compared key by key and
    arrays of equal length item by item (arrays of different lengths differ as a whole)."""
    if isinstance(before, dict) and isinstance(after, dict):
        differences: list[Difference] = []
        for key in [*before, *(k for k in after if k not in before)]:
            differences += json_diff(before.get(key, MISSING), after.get(key, MISSING),
                                     f"{path}.{key}")
        return differences
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (a, b) in enumerate(zip(before, after, strict=True))
                for d in json_diff(a, b, f"{path}[{i}]")]
    if before is MISSING or after is MISSING:
        return [] if before is after else [Difference(path, before, after)]
    return [] if same_json(before, after) else [Difference(path, before, after)]


def _step_view(step: StepState) -> JSONObject:
    view: JSONObject = {"status": step.status.value, "attempt": step.attempt}
    if step.component is not None:
        view["component"] = step.component
    if step.status is not StepStatus.BLOCKED:
        view["input"] = step.input
    if step.status is StepStatus.COMPLETED:
        view["output"] = step.output
    if step.error is not None:
        view["error"] = step.error.to_json()
    if step.skip_reason is not None:
        view["skipReason"] = step.skip_reason
    if step.from_default:
        view["fromDefault"] = True
    if step.reused_from is not None:
        view["reusedFrom"] = step.reused_from
    return view


def state_view(state: RunState) -> JSONObject:
    """What a run's state says, as JSON, without timestamps: the run's status, input and
    result, and each needed step's status, attempt, input, output, error and skip reason."""
    view: JSONObject = {"status": state.status.value, "input": state.input}
    if state.cancel_requested:
        view["cancelRequested"] = True
    if state.result is not None:
        view["result"] = state.result.to_json()
    view["steps"] = {step_id: _step_view(step) for step_id, step in state.steps.items()}
    return view


_STEP_FIELDS = ("status", "input", "output", "error")


def diff_runs(a: RunState, b: RunState) -> list[Difference]:
    """How run ``b`` differs from run ``a``: their input and result, which steps each ran,
    and each step's status, input, output and error. Paths are ``input...``,
    ``result...`` and ``steps.ID.FIELD...``. A step one run reused from the other (a fork)
    has no input of its own, so inputs are compared only where both runs recorded one."""
    differences = json_diff(a.input, b.input, "input")
    differences += json_diff(_result(a), _result(b), "result")
    for step_id in [*a.steps, *(s for s in b.steps if s not in a.steps)]:
        path = f"steps.{step_id}"
        step_a, step_b = a.steps.get(step_id), b.steps.get(step_id)
        if step_a is None or step_b is None:
            differences.append(Difference(path, _presence(step_a), _presence(step_b)))
            continue
        view_a, view_b = _step_view(step_a), _step_view(step_b)
        for name in _STEP_FIELDS:
            if name == "input" and (step_a.reused_from or step_b.reused_from):
                continue
            differences += json_diff(view_a.get(name, MISSING), view_b.get(name, MISSING),
                                     f"{path}.{name}")
    return differences


def _result(state: RunState) -> JSON:
    return state.result.to_json() if state.result is not None else None


def _presence(step: StepState | None) -> JSON:
    return MISSING if step is None else step.status.value
