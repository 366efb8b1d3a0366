"""The embedded runtime agrees with an independent reference evaluator on random flows.

Random DAG flows (2-12 steps; inputs are expression trees over ``$input`` paths, ``$step``
references to earlier steps with paths and ``onSkip``, ``$literal``, ``$if``, ``$coalesce``,
objects and lists; random ``skip`` conditions and ``mustExecute`` flags) run on the embedded
runtime with a deterministic test plugin. The FlowResult must equal the reference's, and the
steps the engine asked for and started must be those the reference needs (laziness): exactly,
when the needed set does not depend on evaluation order; otherwise between the reference's
lower and upper bounds (see ``flowgen``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowgen import (
    KINDS_ALL,
    check_against_reference,
    component_output,
    flows,
    inputs,
    reference,
    run_embedded,
    truthy,
)
from hypothesis import HealthCheck, given, settings

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(doc=flows(KINDS_ALL), input=inputs)
def test_embedded_runtime_matches_reference(doc: dict[str, Any], input: Any) -> None:
    ref = reference(doc, input)
    run = asyncio.run(run_embedded(doc, input))
    check_against_reference(ref, run.result, run.events)


@SETTINGS
@given(doc=flows(("f", "g"), depth=3), input=inputs)
def test_pure_flows_match_reference(doc: dict[str, Any], input: Any) -> None:
    """Only pure components and deeper expressions: every run succeeds."""
    ref = reference(doc, input)
    assert not ref.may_fail
    run = asyncio.run(run_embedded(doc, input))
    assert run.result.ok, run.result
    check_against_reference(ref, run.result, run.events)


@settings(SETTINGS, max_examples=150)
@given(doc=flows(KINDS_ALL, fan_in=True), input=inputs)
def test_fan_in_flows_match_reference(doc: dict[str, Any], input: Any) -> None:
    """Inputs that are lists/objects of several step reads and frequent skip conditions: skip
    propagation through objects, lists, $if conditions and onSkip defaults."""
    ref = reference(doc, input)
    run = asyncio.run(run_embedded(doc, input))
    check_against_reference(ref, run.result, run.events)


def test_reference_evaluator_basics() -> None:
    """The reference itself, on hand-written cases from the spec."""
    doc = {
        "steps": [
            {"id": "a", "component": "/test/f", "input": 1, "skip": {"$input": "s"}},
            {"id": "b", "component": "/test/f", "input": {"$step": "a"}},
            {"id": "c", "component": "/test/f",
             "input": {"$step": "a", "onSkip": {"action": "useDefault", "defaultValue": 5}}},
            {"id": "unused", "component": "/test/f", "input": 2},
        ],
        "output": {
            "b": {"$step": "b"},
            "c": {"$step": "c", "path": "echo"},
            "first": {"$coalesce": [{"$step": "a"}, {"$literal": {"$step": "x"}}]},
            "lazy": {"$if": {"$input": "s"}, "then": 1, "else": {"$step": "a", "path": "echo"}},
        },
    }
    ref = reference(doc, {"s": True})
    assert ref.value == {"b": None, "c": 5, "first": {"$step": "x"}, "lazy": 1}
    assert ref.needed_max == ref.needed_min == {"a", "b", "c"}
    assert ref.ran_max == {"c"}
    ref = reference(doc, {"s": 0})
    a = component_output("/f", 1)
    assert ref.value == {"b": component_output("/f", a), "c": a, "first": a, "lazy": 1}
    assert ref.needed_max == ref.needed_min == {"a", "b", "c"}
    assert ref.ran_max == {"a", "b", "c"}


FALSY = [None, False, 0, 0.0, "", [], {}]
TRUTHY = [True, 1, -1, 0.5, "0", "false", [0], [None], {"a": None}]


def test_reference_truthiness() -> None:
    assert [truthy(v) for v in FALSY] == [False] * len(FALSY)
    assert [truthy(v) for v in TRUTHY] == [True] * len(TRUTHY)
