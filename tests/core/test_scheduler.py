"""The scheduler driven by hand: no runtime, no I/O."""

from typing import Any

from stepflow_stream.core.events import (
    CancelRun,
    ErrorInfo,
    Event,
    RunCompleted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepsNeeded,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.scheduler import RunPlan, decide, handle
from stepflow_stream.core.state import RunState, RunStatus, fold


class Router:
    def route(self, component: str, input: Any) -> tuple[str, str]:
        return "test", component


def start(text: str, input: Any = None) -> tuple[RunPlan, RunState, list[Event]]:
    flow = parse_flow_text(text)
    plan = RunPlan(flow, Router())
    state = RunState("r")
    events = handle(plan, state, SubmitRun("r", flow.flow_id, input or {}, {}), 0)
    return plan, state, events


def started(events: list[Event]) -> dict[str, StepStarted]:
    return {e.step_id: e for e in events if isinstance(e, StepStarted)}


DIAMOND = """
steps:
  - {id: a, component: /c, input: {$input: x}}
  - {id: b, component: /c, input: {$step: a}}
  - {id: c, component: /c, input: {$step: a}}
  - {id: d, component: /c, input: [{$step: b}, {$step: c}]}
  - {id: unused, component: /c, input: 1}
output: {$step: d}
"""


def test_diamond_runs_independent_steps_together_and_lazily() -> None:
    plan, state, events = start(DIAMOND, {"x": 1})
    assert [type(e).__name__ for e in events] == [
        "RunCreated", "StepsNeeded", "StepsNeeded", "StepsNeeded", "StepStarted"]
    assert [e.step_ids for e in events if isinstance(e, StepsNeeded)] == [
        ("d",), ("b", "c"), ("a",)]
    assert started(events).keys() == {"a"}
    events = handle(plan, state, TaskResult("r", "r/a/1", output=1), 1)
    assert started(events).keys() == {"b", "c"}
    handle(plan, state, TaskResult("r", "r/b/1", output=2), 2)
    events = handle(plan, state, TaskResult("r", "r/c/1", output=3), 3)
    assert started(events)["d"].input == [2, 3]
    events = handle(plan, state, TaskResult("r", "r/d/1", output="done"), 4)
    assert isinstance(events[-1], RunCompleted) and events[-1].result == "done"
    assert "unused" not in state.steps


def test_duplicate_task_result_appends_nothing() -> None:
    plan, state, _ = start(DIAMOND, {"x": 1})
    assert handle(plan, state, TaskResult("r", "r/a/1", output=1), 1)
    assert handle(plan, state, TaskResult("r", "r/a/1", output=1), 2) == []
    assert handle(plan, state, TaskResult("r", "r/never/1", output=1), 2) == []


def test_decide_is_idempotent() -> None:
    plan, state, _ = start(DIAMOND, {"x": 1})
    assert decide(plan, state, 5) == []


RETRY = """
steps:
  - id: flaky
    component: /c
    onError: {action: retry, maxRetries: 2}
output: {$step: flaky}
"""


def test_retry_then_fail_after_max_retries() -> None:
    plan, state, _ = start(RETRY)
    error = ErrorInfo("COMPONENT_FAILED", "boom")
    for attempt in (1, 2):
        events = handle(plan, state, TaskResult("r", f"r/flaky/{attempt}", error=error,
                                                retryable=True), attempt)
        assert isinstance(events[0], StepFailed)
        assert started(events)["flaky"].attempt == attempt + 1
    events = handle(plan, state, TaskResult("r", "r/flaky/3", error=error, retryable=True), 3)
    assert state.status is RunStatus.FAILED
    assert state.result is not None and state.result.error is not None
    assert state.result.error.code == "COMPONENT_FAILED"
    assert "flaky" in state.result.error.message


def test_retry_does_not_retry_validation_errors() -> None:
    plan, state, _ = start(RETRY)
    error = ErrorInfo("INVALID_INPUT", "bad")
    handle(plan, state, TaskResult("r", "r/flaky/1", error=error, retryable=False), 1)
    assert state.status is RunStatus.FAILED


def test_use_default_and_skip_on_error() -> None:
    plan, state, _ = start("""
steps:
  - {id: a, component: /c, onError: {action: useDefault, defaultValue: {v: 0}}}
  - {id: b, component: /c, onError: {action: skip}}
output: {a: {$step: a}, b: {$step: b}}
""")
    error = ErrorInfo("COMPONENT_FAILED", "no")
    events = handle(plan, state, TaskResult("r", "r/a/1", error=error), 1)
    assert any(isinstance(e, StepCompleted) and e.from_default for e in events)
    events = handle(plan, state, TaskResult("r", "r/b/1", error=error), 2)
    assert any(isinstance(e, StepSkipped) for e in events)
    assert state.result is not None and state.result.result == {"a": {"v": 0}, "b": None}


def test_skip_propagates_unless_on_skip_default() -> None:
    _plan, _state, events = start("""
steps:
  - {id: gate, component: /c, skip: {$input: off}}
  - {id: reader, component: /c, input: {$step: gate}}
  - id: tolerant
    component: /c
    input: {$step: gate, onSkip: {action: useDefault, defaultValue: fallback}}
output: [{$step: reader}, {$step: tolerant}]
""", {"off": True})
    skipped = {e.step_id for e in events if isinstance(e, StepSkipped)}
    assert skipped == {"gate", "reader"}
    assert started(events)["tolerant"].input == "fallback"


def test_must_execute_runs_and_holds_the_run_open() -> None:
    plan, state, events = start("""
steps:
  - {id: audit, component: /c, mustExecute: true}
output: 42
""")
    assert started(events).keys() == {"audit"}
    assert state.status is RunStatus.RUNNING
    events = handle(plan, state, TaskResult("r", "r/audit/1", output={}), 1)
    assert isinstance(events[-1], RunCompleted) and events[-1].result == 42


def test_cancel_ends_the_run_and_late_results_are_ignored() -> None:
    plan, state, _ = start(DIAMOND, {"x": 1})
    events = handle(plan, state, CancelRun("r"), 1)
    assert state.status is RunStatus.CANCELLED and len(events) == 2
    assert handle(plan, state, TaskResult("r", "r/a/1", output=1), 2) == []


def test_fold_of_emitted_events_equals_live_state_and_decide_resumes_after_fold() -> None:
    plan, state, journal = start(DIAMOND, {"x": 1})
    journal += handle(plan, state, TaskResult("r", "r/a/1", output=1), 1)
    folded = fold("r", journal)
    assert folded == state
    assert decide(plan, folded, 2) == []
    journal += handle(plan, folded, TaskResult("r", "r/b/1", output=2), 2)
    journal += handle(plan, folded, TaskResult("r", "r/c/1", output=3), 3)
    assert started(journal)["d"].input == [2, 3]
    assert [e.seq for e in journal] == list(range(len(journal)))
    assert sum(isinstance(e, StepsNeeded) for e in journal) >= 1
