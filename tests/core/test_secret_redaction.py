"""No secret variable value is ever in an event: not in a step's recorded input, not in a
component's output that echoes it, not in the run's result, not in an error's message or data.
The state is the fold of the events, so later steps and a replay see the same redacted values."""

from __future__ import annotations

from typing import Any

from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.scheduler import RunPlan, handle, task_input
from stepflow_stream.core.state import RunState, fold
from stepflow_stream.core.variables import REDACTED
from stepflow_stream.journal.codec import encode_event

SECRET = "sk-live-0123456789abcdef"

FLOW = """
variablesSchema:
  type: object
  properties:
    api_key: {type: string, is_secret: true}
steps:
  - id: call
    component: /c
    input: {key: {$variable: api_key}, text: {$input: text}}
  - id: after
    component: /c
    input: {echoed: {$step: call}}
output: {first: {$step: call}, second: {$step: after}, key: {$variable: api_key}}
"""


class Router:
    def route(self, component: str, input: Any) -> tuple[str, str]:
        return "test", component


def _start() -> tuple[RunPlan, RunState, list[Event]]:
    flow = parse_flow_text(FLOW)
    plan = RunPlan(flow, Router())
    state = RunState("r")
    state.secrets = {"api_key": SECRET}
    events = handle(plan, state, SubmitRun("r", flow.flow_id, {"text": "hi"}, {}), 0)
    return plan, state, events


def _task(events: list[Event], step_id: str) -> StepStarted:
    [event] = [e for e in events if isinstance(e, StepStarted) and e.step_id == step_id]
    return event


def _leaks(events: list[Event]) -> list[Event]:
    return [e for e in events if SECRET.encode() in encode_event(e) or SECRET in repr(e)]


def test_an_output_echoing_the_secret_is_recorded_redacted() -> None:
    plan, state, events = _start()
    call = _task(events, "call")
    assert call.input == {"key": REDACTED, "text": "hi"}
    # The component gets the real value; the journal never sees it.
    assert task_input(plan, state, "call") == {"key": SECRET, "text": "hi"}
    echoed: JSON = {"said": f"Bearer {SECRET}", "key": SECRET}
    events += handle(plan, state, TaskResult("r", call.task_id, output=echoed), 1)
    [completed] = [e for e in events if isinstance(e, StepCompleted)]
    assert completed.output == {"said": f"Bearer {REDACTED}", "key": REDACTED}
    after = _task(events, "after")
    assert after.input == {"echoed": {"said": f"Bearer {REDACTED}", "key": REDACTED}}
    events += handle(plan, state, TaskResult("r", after.task_id, output="done"), 2)
    [finished] = [e for e in events if isinstance(e, RunCompleted)]
    assert finished.result == {"first": completed.output, "second": "done", "key": REDACTED}
    assert _leaks(events) == []
    assert fold("r", events) == state


def test_an_error_quoting_the_secret_is_recorded_redacted() -> None:
    plan, state, events = _start()
    call = _task(events, "call")
    error = ErrorInfo("COMPONENT_FAILED", f"401 for key {SECRET}", {"headers": [SECRET]})
    events += handle(plan, state, TaskResult("r", call.task_id, error=error), 1)
    [failed] = [e for e in events if isinstance(e, RunFailed)]
    assert failed.error.message == f"step 'call' failed: 401 for key {REDACTED}"
    assert failed.error.data == {"headers": [REDACTED]}
    assert _leaks(events) == []


def test_without_secrets_values_are_untouched() -> None:
    flow = parse_flow_text(FLOW.replace("is_secret: true", "is_secret: false"))
    plan = RunPlan(flow, Router())
    state = RunState("r")
    events = handle(plan, state, SubmitRun("r", flow.flow_id, {"text": "hi"},
                                           {"api_key": SECRET}), 0)
    call = _task(events, "call")
    assert call.input == {"key": SECRET, "text": "hi"}
    events += handle(plan, state, TaskResult("r", call.task_id, output=SECRET), 1)
    [completed] = [e for e in events if isinstance(e, StepCompleted)]
    assert completed.output == SECRET
