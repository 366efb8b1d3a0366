"""The pure side of replay: verifying a journal against a flow, forking, and diffs, on the
golden run of ``tests/golden`` (a real recorded run, dumped as the journal encodes it)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from stepflow_stream.core.events import (
    Event,
    FlowResult,
    RunCompleted,
    RunCreated,
    StepCompleted,
    StepsNeeded,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import Flow, parse_flow, parse_flow_text
from stepflow_stream.core.fork import downstream_of, plan_fork
from stepflow_stream.core.rundiff import MISSING, Difference, diff_runs, json_diff, state_view
from stepflow_stream.core.scheduler import RunPlan, handle
from stepflow_stream.core.state import RunState, StepStatus, fold
from stepflow_stream.core.verify import verify_run
from stepflow_stream.errors import ComponentError, InputError
from stepflow_stream.journal.codec import decode_event, encode_event
from stepflow_stream.journal.dump import load_dump
from stepflow_stream.kafka.command_codec import decode_command, encode_command

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
RUN_ID = "golden-orders-1"
RESULT = {
    "summary": {
        "label": {"name": "one", "first_tag": "x"},
        "order": {"items": [{"sku": "a-1", "n": 2}, {"sku": "b-7", "n": 1}], "currency": "EUR"},
        "audit": "none",
        "flaky": "twice",
    },
    "customer": "one",
}


def _golden() -> tuple[list[Event], Flow]:
    async def load() -> tuple[list[Event], Any]:
        journal, blobs = await load_dump(GOLDEN / "orders.journal.jsonl")
        events = await journal.read(RUN_ID)
        created = events[0]
        assert isinstance(created, RunCreated)
        return events, await blobs.get(created.flow_id)

    events, document = asyncio.run(load())
    return events, parse_flow(document)


EVENTS, RECORDED_FLOW = _golden()


def edited(change: Any) -> Flow:
    """The golden flow with ``change(document)`` applied."""
    document = copy.deepcopy(RECORDED_FLOW.document)
    change(document)
    return parse_flow(document, source="edited.yaml")


def step_doc(document: dict[str, Any], step_id: str) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in document["steps"] if s["id"] == step_id)
    return step


# The golden run ----------------------------------------------------------------------------


def test_the_golden_journal_folds_to_the_stored_result() -> None:
    state = fold(RUN_ID, EVENTS)
    assert state.result == FlowResult(result=RESULT)
    last = EVENTS[-1]
    assert isinstance(last, RunCompleted) and last.result == RESULT
    assert state.steps["flaky"].attempt == 3
    assert state.steps["audit"].status is StepStatus.SKIPPED
    # The flow file beside the dump is the one the run recorded.
    assert parse_flow_text((GOLDEN / "orders.yaml").read_text()).flow_id == \
        RECORDED_FLOW.flow_id


def test_the_golden_run_verifies_against_its_flow() -> None:
    report = verify_run(RECORDED_FLOW, EVENTS, recorded_flow=RECORDED_FLOW,
                        stored_result=FlowResult(result=RESULT))
    assert report.mismatches == []
    assert report.inputs_checked == 5  # lookup, price, flaky (once for 3 attempts), label, summary


def test_a_changed_input_expression_names_the_step_and_field() -> None:
    def change(document: dict[str, Any]) -> None:
        step_doc(document, "label")["input"]["passthrough"]["then"]["first_tag"]["path"] = \
            "$.tags[1]"

    report = verify_run(edited(change), EVENTS, recorded_flow=RECORDED_FLOW)
    assert [(m.step, m.field) for m in report.mismatches] == [
        ("label", "input.passthrough.first_tag")]
    assert str(report.mismatches[0]) == ("step 'label' field 'input.passthrough.first_tag': "
                                         'recorded "x", evaluated now "y"')


def test_a_changed_variable_default_is_not_a_mismatch_but_a_changed_literal_is() -> None:
    # Variables are recorded with the run: a new default does not change the recorded value.
    def default(document: dict[str, Any]) -> None:
        document["schemas"]["properties"]["variables"]["properties"]["currency"]["default"] = "X"

    assert verify_run(edited(default), EVENTS).mismatches == []

    def literal(document: dict[str, Any]) -> None:
        step_doc(document, "price")["input"]["duration_ms"] = 5

    [mismatch] = verify_run(edited(literal), EVENTS).mismatches
    assert (mismatch.step, mismatch.field) == ("price", "input.duration_ms")


def test_removed_added_and_changed_steps_are_named() -> None:
    def change(document: dict[str, Any]) -> None:
        step_doc(document, "flaky")["component"] = "/mock/lookup"
        document["steps"] = [s for s in document["steps"] if s["id"] != "price"]
        document["steps"].append({"id": "extra", "component": "/builtin/sleep",
                                  "input": {"duration_ms": 0}})
        step_doc(document, "summary")["input"]["passthrough"]["order"] = {"$step": "extra"}

    found = {(m.step, m.field) for m in
             verify_run(edited(change), EVENTS, recorded_flow=RECORDED_FLOW).mismatches}
    assert found == {
        ("price", "step"),         # the run ran it, the flow lacks it
        ("extra", "step"),         # the flow has it, the run's flow did not
        ("flaky", "component"),
        ("summary", "input"),      # now reads 'extra', which the run never completed
    }


def test_skip_conditions_are_evaluated_again() -> None:
    def change(document: dict[str, Any]) -> None:
        step_doc(document, "audit")["skip"] = {"$input": "loud"}

    [mismatch] = verify_run(edited(change), EVENTS).mismatches
    assert (mismatch.step, mismatch.field) == ("audit", "skip")
    assert "now false" in mismatch.message


def test_the_flow_output_and_the_stored_result_are_compared() -> None:
    def change(document: dict[str, Any]) -> None:
        document["output"]["customer"] = {"$step": "lookup", "path": "tags"}

    [output] = verify_run(edited(change), EVENTS).mismatches
    assert (output.step, output.field) == (None, "output.customer")
    [stored] = verify_run(RECORDED_FLOW, EVENTS,
                          stored_result=FlowResult(result={"other": 1})).mismatches
    assert (stored.step, stored.field) == (None, "result")


class _Router:
    def __init__(self, plugin: str) -> None:
        self.plugin = plugin

    def route(self, component: str, input: Any) -> tuple[str, str]:
        if component == "/mock/never_call":
            raise ComponentError("INVALID_INPUT", "no route")
        prefix, _, name = component.rpartition("/")
        return (self.plugin if prefix == "/mock" else "builtin"), f"/{name}"


def test_components_are_routed_again_with_a_router() -> None:
    assert verify_run(RECORDED_FLOW, EVENTS, router=_Router("mock")).mismatches == []
    found = verify_run(RECORDED_FLOW, EVENTS, router=_Router("remote")).mismatches
    assert {(m.step, m.field) for m in found} == {("lookup", "component"),
                                                  ("flaky", "component")}
    assert "plugin 'remote'" in found[0].message


def test_a_journal_with_a_gap_is_a_mismatch() -> None:
    report = verify_run(RECORDED_FLOW, [*EVENTS[:3], *EVENTS[4:]])
    assert [(m.step, m.field) for m in report.mismatches] == [(None, "journal")]


# Forks --------------------------------------------------------------------------------------


def test_downstream_of_follows_readers_transitively() -> None:
    assert downstream_of(RECORDED_FLOW, "lookup") == {"lookup", "audit", "label", "summary"}
    assert downstream_of(RECORDED_FLOW, "summary") == {"summary"}


def test_a_fork_reuses_what_does_not_read_the_step() -> None:
    parent = fold(RUN_ID, EVENTS)
    plan = plan_fork(RECORDED_FLOW, parent, "label", parent.input)
    assert list(plan.reused) == ["lookup", "price", "flaky"]
    assert plan.reused["lookup"] == {"name": "one", "tags": ["x", "y"]}
    assert plan.rerun == {"label": "the fork runs from it",
                          "summary": "it reads step 'label'"}
    assert plan.variables == {"currency": "EUR"}


def test_a_fork_with_another_input_runs_again_what_the_input_changes() -> None:
    parent = fold(RUN_ID, EVENTS)
    new_input = {**parent.input, "customer": 2}
    plan = plan_fork(RECORDED_FLOW, parent, "summary", new_input)
    assert list(plan.reused) == ["price", "flaky"]
    assert plan.rerun["lookup"] == "its input differs from the recorded one"
    assert plan.rerun["label"] == "it reads step 'lookup', which runs again"


def test_a_fork_from_an_unknown_step_names_it() -> None:
    with pytest.raises(InputError, match=r"no step 'ghost' in the flow .*lookup, price"):
        plan_fork(RECORDED_FLOW, fold(RUN_ID, EVENTS), "ghost", None)


def test_the_scheduler_records_reused_steps_and_never_starts_them() -> None:
    parent = fold(RUN_ID, EVENTS)
    plan = plan_fork(RECORDED_FLOW, parent, "label", parent.input)

    class Router:
        def route(self, component: str, input: Any) -> tuple[str, str]:
            return "p", component

    run_plan = RunPlan(RECORDED_FLOW, Router())
    state = RunState("fork-1")
    command = SubmitRun("fork-1", RECORDED_FLOW.flow_id, parent.input, plan.variables,
                        parent_run_id=RUN_ID, forked_from_step="label", reused=plan.reused)
    events = handle(run_plan, state, command, 1)
    created, needed, *reused = events[:6]
    assert isinstance(created, RunCreated) and created.forked_from_step == "label"
    assert created.parent_run_id == RUN_ID
    assert isinstance(needed, StepsNeeded) and needed.step_ids == ("lookup", "price", "flaky")
    assert [(e.step_id, e.task_id, e.reused_from) for e in reused
            if isinstance(e, StepCompleted)] == [("lookup", "fork-1/lookup/0", RUN_ID),
                                                 ("price", "fork-1/price/0", RUN_ID),
                                                 ("flaky", "fork-1/flaky/0", RUN_ID)]
    assert [e.step_id for e in events if isinstance(e, StepStarted)] == ["label"]
    events = handle(run_plan, state, TaskResult("fork-1", "fork-1/label/1",
                                                output={"name": "one", "first_tag": "x"}), 2)
    assert [e.step_id for e in events if isinstance(e, StepStarted)] == ["summary"]
    handle(run_plan, state, TaskResult("fork-1", "fork-1/summary/1",
                                       output=parent.steps["summary"].output), 3)
    assert state.result == FlowResult(result=RESULT)
    assert state.steps["lookup"].reused_from == RUN_ID


def test_fork_fields_survive_the_codecs() -> None:
    created = RunCreated("f", 0, 1, "flow", {"a": 1}, {}, parent_run_id="p",
                         forked_from_step="s")
    completed = StepCompleted("f", 2, 3, "a", "f/a/0", [1], reused_from="p")
    assert [decode_event(encode_event(e)) for e in (created, completed)] == [created, completed]
    submit = SubmitRun("f", "flow", {"a": 1}, {}, parent_run_id="p", forked_from_step="s",
                       reused={"a": [1], "b": None})
    assert decode_command(encode_command(submit)) == submit


def test_events_written_before_the_fork_fields_read_them_unset() -> None:
    """StepCompleted bytes of the schema before forks (fingerprint cbac29cc3654a5e7)."""
    body = b"\x02r\x02\x04\x06\x02s\x02t\x12" + b'{"a":1.5}' + b"\x00"
    event = decode_event(b"\x01" + bytes.fromhex("cbac29cc3654a5e7") + body)
    assert event == StepCompleted("r", 1, 2, "s", "t", {"a": 1.5})
    assert isinstance(event, StepCompleted) and event.reused_from is None


# Diffs --------------------------------------------------------------------------------------


def test_json_diff_names_each_differing_leaf() -> None:
    assert json_diff({"a": [1, {"b": 2}], "c": 1}, {"a": [1, {"b": 3}], "d": 1.0}) == [
        Difference(".a[1].b", 2, 3), Difference(".c", 1, MISSING), Difference(".d", MISSING, 1.0)]
    assert json_diff({"k": 1, "j": 2}, {"j": 2, "k": 1}) == []
    assert json_diff(1, 1.0) == [Difference("", 1, 1.0)]
    assert json_diff([1], [1, 2]) == [Difference("", [1], [1, 2])]


def test_diff_runs_compares_input_result_and_steps() -> None:
    parent = fold(RUN_ID, EVENTS)
    assert diff_runs(parent, parent) == []
    other = copy.deepcopy(parent)
    other.steps["label"].output = {"name": "one", "first_tag": "y"}
    other.steps["audit"].status = StepStatus.COMPLETED
    del other.steps["price"]
    paths = [d.path for d in diff_runs(parent, other)]
    assert paths == ["steps.audit.status", "steps.audit.output", "steps.label.output.first_tag",
                     "steps.price"]


def test_state_view_leaves_out_times() -> None:
    view = state_view(fold(RUN_ID, EVENTS[:3]))
    assert view == {"status": "running", "input": EVENTS[0].input,  # type: ignore[attr-defined]
                    "steps": {"lookup": {"status": "running", "attempt": 1,
                                         "component": "/lookup", "input": {"id": 1}},
                              "summary": {"status": "blocked", "attempt": 0}}}
