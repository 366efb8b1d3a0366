"""The pure core driven by hand: ``handle``/``decide`` with TaskResults in random orders.

No runtime and no I/O: the test plays the workers. Whatever order the outstanding tasks finish
in, and however often a result is delivered again, the run must end the same way, a duplicate
must append nothing, and the state must be the fold of the events returned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowgen import (
    CONFIG,
    KINDS_ALL,
    check_against_reference,
    check_journal_shape,
    flows,
    inputs,
    reference,
    same_result,
    started_steps,
    task_outcome,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.core.scheduler import RunPlan, decide, handle
from stepflow_stream.core.state import RunState, fold
from stepflow_stream.errors import ComponentError

RUN = "pure-run"

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Chooser = Callable[[list[str]], int]


def result_for(started: StepStarted) -> TaskResult:
    """What a worker reports for a task: the test components are deterministic per attempt."""
    try:
        output = task_outcome(started.component, started.input, started.attempt)
    except ComponentError as exc:
        return TaskResult(RUN, started.task_id, error=ErrorInfo(exc.code, exc.message),
                          retryable=exc.retryable)
    return TaskResult(RUN, started.task_id, output=output)


def drive(
    doc: dict[str, Any],
    input: Any,
    choose: Chooser,
    duplicate: Callable[[int], int | None] = lambda n: None,
) -> tuple[RunState, list[Event], RunPlan]:
    """Run ``doc`` by delivering, each turn, the outstanding task ``choose`` picks; after each
    delivery ``duplicate`` may pick an already delivered result to deliver again."""
    flow = parse_flow(doc)
    plan = RunPlan(flow, CONFIG.routes)
    state = RunState(RUN)
    events = handle(plan, state, SubmitRun(RUN, flow.flow_id, input, {}), 0)
    starts = {e.task_id: e for e in events if isinstance(e, StepStarted)}
    delivered: list[TaskResult] = []
    now = 1
    while not state.terminal:
        outstanding = list(state.running_tasks)
        assert outstanding, "the run waits for nothing but is not finished"
        task_id = outstanding[choose(outstanding)]
        result = result_for(starts[task_id])
        new = handle(plan, state, result, now)
        assert new, f"the result of outstanding task {task_id} changed nothing"
        events += new
        starts.update((e.task_id, e) for e in new if isinstance(e, StepStarted))
        delivered.append(result)
        again = duplicate(len(delivered))
        if again is not None:
            before = copy.deepcopy(state)
            assert handle(plan, state, delivered[again], now) == []
            assert state == before
        assert decide(plan, state, now) == [], "decide is not idempotent"
        now += 1
    return state, events, plan


def fifo(outstanding: list[str]) -> int:
    return 0


@SETTINGS
@given(doc=flows(KINDS_ALL), input=inputs, data=st.data())
def test_random_orders_and_duplicates(doc: dict[str, Any], input: Any, data: st.DataObject) -> None:
    """Random completion orders with duplicated results: duplicates append nothing (also after
    the end), the state is the fold of the events, and the run agrees with the reference."""

    def choose(outstanding: list[str]) -> int:
        return data.draw(st.integers(0, len(outstanding) - 1), label="next task")

    def duplicate(n: int) -> int | None:
        return data.draw(st.none() | st.integers(0, n - 1), label="duplicate")

    state, events, plan = drive(doc, input, choose, duplicate)
    check_journal_shape(events, RUN)
    assert fold(RUN, events) == state
    # After the end every result, delivered before or not, appends nothing.
    for started in [e for e in events if isinstance(e, StepStarted)]:
        assert handle(plan, state, result_for(started), 10_000) == []
    assert state.result is not None
    check_against_reference(reference(doc, input), state.result, events)


# Many failing components and fan-in inputs: the shapes where completion order could matter.
RACY = flows(("f", "f", "g", "fail", "flaky"), fan_in=True)


@SETTINGS
@given(doc=RACY, input=inputs, data=st.data())
def test_outcome_does_not_depend_on_completion_order(
    doc: dict[str, Any], input: Any, data: st.DataObject
) -> None:
    """A permutation of task completions gives the same FlowResult as FIFO delivery (failures
    compare on their code: which of several failing steps is named first is a race)."""
    first, _, _ = drive(doc, input, fifo)

    def choose(outstanding: list[str]) -> int:
        return data.draw(st.integers(0, len(outstanding) - 1), label="next task")

    second, _, _ = drive(doc, input, choose)
    assert first.result is not None and second.result is not None
    assert same_result(first.result, second.result), (first.result, second.result)


# Found by the properties above, reduced by hand: -------------------------------------------------

# A step reading [a skipped step, a failing step]: it is skipped as soon as the skip is known,
# so whether the failing step's failure lands first decides the run's outcome.
RACE = {
    "steps": [
        {"id": "s", "component": "/test/g", "input": 7},
        {"id": "x", "component": "/test/f", "input": 1, "skip": {"$step": "s", "path": "echo"}},
        {"id": "y", "component": "/test/fail", "input": 2},
        {"id": "r", "component": "/test/f", "input": [{"$step": "x"}, {"$step": "y"}]},
    ],
    "output": {"$step": "r"},
}


def test_skip_racing_a_failure_gives_one_answer() -> None:
    """ENGINE BUG (nondeterminism): same flow, same input, two FlowResults.

    Delivering ``s`` first skips ``x`` and so ``r``: success with null. Delivering ``y`` first
    fails the run. Invariant 4 (same answer) cannot hold if the answer depends on timing."""
    in_order, _, _ = drive(RACE, {}, lambda outstanding: 0)
    reversed_, _, _ = drive(RACE, {}, lambda outstanding: len(outstanding) - 1)
    assert in_order.result is not None and reversed_.result is not None
    assert same_result(in_order.result, reversed_.result), (in_order.result, reversed_.result)


def renamed(doc: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            if isinstance(out.get("$step"), str):
                out["$step"] = names.get(out["$step"], out["$step"])
            if "id" in out and out["id"] in names:
                out["id"] = names[out["id"]]
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(doc)


# ``r`` reads [x, y] and x is skipped (literally): whether y runs depends on whether the
# scheduler looks at ``r`` or at ``x`` first, which is the alphabetical order of their ids.
NAMING = {
    "steps": [
        {"id": "x", "component": "/test/f", "input": 1, "skip": True},
        {"id": "y", "component": "/test/fail", "input": 2},
        {"id": "r", "component": "/test/f", "input": [{"$step": "x"}, {"$step": "y"}]},
        {"id": "w", "component": "/test/f", "input": 3},
    ],
    "output": [{"$step": "x"}, {"$step": "r"}, {"$step": "w"}],
}


def test_which_steps_run_does_not_depend_on_step_names() -> None:
    """ENGINE BUG (laziness depends on ids): renaming step ``x`` to ``a`` changes whether the
    step ``y`` runs, and, as ``y`` fails and finishes before ``w`` here, whether the run fails.

    With the ids as written, the scheduler looks at ``r`` before ``x``, finds ``x`` pending and
    asks for ``y`` too; renamed, it skips ``x`` first and then ``r`` without ever needing
    ``y``. Either answer may be the intended one, but not both."""
    outcomes = []
    for rename in ({}, {"x": "a"}):
        back = {new: old for old, new in rename.items()}
        state, events, _ = drive(renamed(NAMING, rename), {}, lambda tasks: len(tasks) - 1)
        assert state.result is not None
        outcomes.append((state.result, {back.get(s, s) for s in started_steps(events)}))
    (first, ran_first), (second, ran_second) = outcomes
    assert ran_first == ran_second
    assert same_result(first, second), (first, second)
