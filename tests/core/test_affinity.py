"""A step's affinity key: parsed as an expression, waited for like its input, recorded in
StepStarted (and so in the state and snapshots), and handed to plugins by the runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepflow_stream.config import parse_config_document
from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    StepsNeeded,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.scheduler import RunPlan, handle
from stepflow_stream.core.state import RunState, fold
from stepflow_stream.core.variables import REDACTED
from stepflow_stream.errors import FlowError
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.journal.snapshots import decode_state, encode_state
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin
from stepflow_stream.runtime.embedded import EmbeddedRuntime


class Router:
    def route(self, component: str, input: Any) -> tuple[str, str]:
        return "test", component


def start(
    text: str, input: JSON = None, secrets: dict[str, JSON] | None = None
) -> tuple[RunPlan, RunState, list[Event]]:
    flow = parse_flow_text(text)
    plan = RunPlan(flow, Router())
    state = RunState("r")
    state.secrets = dict(secrets or {})
    events = handle(plan, state, SubmitRun("r", flow.flow_id, input or {}, {}), 0)
    return plan, state, events


def started(events: list[Event]) -> dict[str, StepStarted]:
    return {e.step_id: e for e in events if isinstance(e, StepStarted)}


def one_step(affinity: str) -> str:
    return f"""
steps:
  - id: a
    component: /c
    input: {{$input: x}}
    affinity: {affinity}
output: {{$step: a}}
"""


# Parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["affinity", "affinityKey", "affinity_key"])
def test_every_spelling_of_the_key_is_read(key: str) -> None:
    flow = parse_flow_text(
        f"steps:\n  - {{id: a, component: /c, {key}: {{$input: user}}}}\noutput: 1\n"
    )
    assert flow.steps[0].affinity is not None
    assert not flow.warnings


def test_a_step_without_affinity_has_none() -> None:
    flow = parse_flow_text("steps:\n  - {id: a, component: /c}\noutput: 1\n")
    assert flow.steps[0].affinity is None


def test_affinity_references_are_dependencies() -> None:
    flow = parse_flow_text("""
steps:
  - {id: a, component: /c}
  - {id: b, component: /c, input: 1, affinity: {$step: a, path: region}}
output: {$step: b}
""")
    assert flow.steps_by_id["b"].dependencies() == {"a"}


def test_unknown_step_in_affinity_names_the_step_and_field() -> None:
    text = """steps:
  - {id: a, component: /c}
  - {id: b, component: /c, affinity: {$step: ghost}}
output: {$step: b}
"""
    with pytest.raises(FlowError, match="unknown step 'ghost'") as info:
        parse_flow_text(text, "aff.yaml")
    assert info.value.location.step == "b"
    assert info.value.location.field == "affinity"
    assert "aff.yaml:3, step 'b', field 'affinity'" in str(info.value)


def test_a_cycle_through_an_affinity_is_found() -> None:
    with pytest.raises(FlowError, match="form a cycle"):
        parse_flow_text("""
steps:
  - {id: a, component: /c, affinity: {$step: b}}
  - {id: b, component: /c, input: {$step: a}}
output: {$step: b}
""")


def test_a_malformed_affinity_expression_names_the_field() -> None:
    with pytest.raises(FlowError, match="needs a 'then' branch") as info:
        parse_flow_text("steps:\n  - {id: a, component: /c, affinity: {$if: 1}}\noutput: 1\n")
    assert info.value.location.step == "a"
    assert info.value.location.field == "affinity"


def test_variables_in_an_affinity_are_known_to_the_flow() -> None:
    flow = parse_flow_text(one_step("{$variable: tenant}"))
    assert [ref.name for ref in flow.variable_refs] == ["tenant"]


# The key in StepStarted -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affinity", "input", "key"),
    [
        ("{$input: user}", {"x": 1, "user": "u-7"}, "u-7"),
        ("shard-1", {"x": 1}, "shard-1"),
        ("{$literal: {$input: user}}", {"x": 1}, '{"$input":"user"}'),
        ("{$input: user}", {"x": 1, "user": 42}, "42"),
        ("{$input: user}", {"x": 1, "user": 1.5}, "1.5"),
        ("{$input: user}", {"x": 1, "user": True}, "true"),
        ("{$input: user}", {"x": 1, "user": {"b": [1, "é"], "a": None}},
         '{"a":null,"b":[1,"é"]}'),
        ("[{$input: x}, {$input: user}]", {"x": 1, "user": "u"}, '[1,"u"]'),
        ("{$input: user}", {"x": 1, "user": ""}, ""),
        ("{$input: user}", {"x": 1, "user": None}, None),
        ("{$input: user}", {"x": 1}, None),
    ],
)
def test_the_key_is_the_value_as_a_string(affinity: str, input: JSON, key: str | None) -> None:
    _, state, events = start(one_step(affinity), input)
    assert started(events)["a"].affinity == key
    assert started(events)["a"].input == 1
    assert state.steps["a"].affinity == key


def test_without_affinity_there_is_no_key() -> None:
    _, _, events = start("steps:\n  - {id: a, component: /c}\noutput: {$step: a}\n")
    assert started(events)["a"].affinity is None


WAITS = """
steps:
  - {id: a, component: /c, input: {$input: x}}
  - id: b
    component: /c
    input: {$input: x}
    affinity: {$step: a, path: region}
output: {$step: b}
"""


def test_a_step_waits_for_the_steps_its_affinity_reads() -> None:
    plan, state, events = start(WAITS, {"x": 1})
    needed = [e.step_ids for e in events if isinstance(e, StepsNeeded)]
    assert needed == [("b",), ("a",)]
    assert started(events).keys() == {"a"}
    events = handle(plan, state, TaskResult("r", "r/a/1", output={"region": "eu"}), 1)
    assert started(events)["b"].affinity == "eu"
    assert started(events)["b"].input == 1


def test_input_and_affinity_are_waited_for_together() -> None:
    plan, state, events = start("""
steps:
  - {id: a, component: /c}
  - {id: k, component: /c}
  - {id: b, component: /c, input: {$step: a}, affinity: {$step: k}}
output: {$step: b}
""")
    assert started(events).keys() == {"a", "k"}
    assert not started(handle(plan, state, TaskResult("r", "r/k/1", output="key"), 1))
    events = handle(plan, state, TaskResult("r", "r/a/1", output="in"), 2)
    assert (started(events)["b"].input, started(events)["b"].affinity) == ("in", "key")


def test_an_affinity_reading_a_skipped_step_gives_no_key() -> None:
    _, state, events = start("""
steps:
  - {id: gone, component: /c, skip: true}
  - {id: b, component: /c, input: 1, affinity: {$step: gone}}
output: {$step: b}
""")
    assert "gone" in state.skipped
    assert started(events)["b"].affinity is None


def test_an_affinity_with_if_needs_only_the_branch_it_takes() -> None:
    _, state, events = start("""
steps:
  - {id: left, component: /c}
  - {id: right, component: /c}
  - id: b
    component: /c
    input: 1
    affinity: {$if: {$input: west}, then: {$step: left}, else: {$step: right}}
output: {$step: b}
""", {"west": False})
    assert "left" not in state.steps
    assert started(events).keys() == {"right"}


def test_a_retry_keeps_the_key() -> None:
    plan, state, events = start("""
steps:
  - {id: a, component: /c, affinity: {$input: user}, onError: {action: retry}}
output: {$step: a}
""", {"user": "u-1"})
    error = ErrorInfo("COMPONENT_FAILED", "boom")
    events = handle(plan, state, TaskResult("r", "r/a/1", error=error, retryable=True), 1)
    retried = started(events)["a"]
    assert (retried.attempt, retried.affinity) == (2, "u-1")


def test_a_secret_in_the_key_is_redacted() -> None:
    _, _, events = start(one_step("{$variable: token}"), {"x": 1}, {"token": "s3cret"})
    assert started(events)["a"].affinity == REDACTED
    _, _, events = start(one_step("{$coalesce: [{$input: nothing}, tenant-s3cret]}"),
                         {"x": 1}, {"token": "s3cret"})
    assert started(events)["a"].affinity == f"tenant-{REDACTED}"


def test_the_key_survives_fold_and_snapshot() -> None:
    plan, state, events = start(WAITS, {"x": 1})
    events += handle(plan, state, TaskResult("r", "r/a/1", output={"region": "eu"}), 1)
    folded = fold("r", events)
    assert folded == state
    assert folded.steps["b"].affinity == "eu"
    assert decode_state(encode_state(folded)).steps["b"].affinity == "eu"


# The runtime hands the key to plugins ---------------------------------------------------------


class KeyRecorder(Plugin):
    """Records each call's affinity key; calls of step ``hold`` wait for ``release``."""

    def __init__(self) -> None:
        self.keys: dict[str, str | None] = {}
        self.release = asyncio.Event()

    async def list_components(self) -> list[ComponentInfo]:
        return []

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        self.keys[context.step_id] = context.affinity_key
        if context.step_id == "hold":
            await self.release.wait()
        return input


RUNTIME_FLOW = """
steps:
  - {id: keyed, component: /rec/x, input: 1, affinity: {$input: user}}
  - {id: plain, component: /rec/x, input: 2}
  - {id: hold, component: /rec/x, input: {$step: keyed}, affinity: held}
output: [{$step: plain}, {$step: hold}]
"""


def runtime(journal: MemoryJournal, blobs: MemoryBlobStore, plugin: Plugin) -> EmbeddedRuntime:
    config = parse_config_document(
        {"plugins": {"rec": {"type": "builtin"}}, "routes": {"/rec/{*c}": [{"plugin": "rec"}]}},
        "affinity test config",
    )
    return EmbeddedRuntime(config, journal, blobs, plugins={"rec": plugin})


async def test_the_embedded_runtime_gives_plugins_the_key_also_after_resume() -> None:
    journal, blobs = MemoryJournal(), MemoryBlobStore()
    first = KeyRecorder()
    async with runtime(journal, blobs, first) as engine:
        flow = parse_flow_text(RUNTIME_FLOW)
        run_id = await engine.submit(flow, {"user": "u-9"})
        while "hold" not in first.keys:
            await asyncio.sleep(0.001)
    assert first.keys == {"keyed": "u-9", "plain": None, "hold": "held"}

    second = KeyRecorder()
    second.release.set()
    async with runtime(journal, blobs, second) as engine:
        assert await engine.resume_unfinished() == [run_id]
        result = await engine.wait(run_id)
    assert result.result == [2, 1]
    assert second.keys == {"hold": "held"}
