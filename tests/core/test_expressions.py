from typing import Any

import pytest

from stepflow_stream.core.expressions import (
    SKIPPED,
    ExpressionSyntaxError,
    Pending,
    Scope,
    compile_expression,
)


def scope(**kwargs: Any) -> Scope:
    return Scope(
        kwargs.get("input", {"name": "ada", "n": 0, "items": [1, 2]}),
        kwargs.get("variables", {"env": "prod"}),
        kwargs.get("outputs", {"a": {"v": 1}, "nul": None}),
        kwargs.get("skipped", {"s"}),
        kwargs.get("skipped_as_null", False),
    )


def ev(expr: Any, **kwargs: Any) -> Any:
    return compile_expression(expr).evaluate(scope(**kwargs))


def test_plain_values_are_constants() -> None:
    assert ev({"x": [1, {"y": "z"}], "$schema": "keeps $-keys"}) == {
        "x": [1, {"y": "z"}],
        "$schema": "keeps $-keys",
    }


def test_input_forms() -> None:
    assert ev({"$input": "name"}) == "ada"
    assert ev({"$input": "$.items[1]"}) == 2
    assert ev({"$input": "$"})["name"] == "ada"
    assert ev({"$input": "$", "path": "n"}) == 0
    assert ev({"$from": {"workflow": "input"}, "path": "name"}) == "ada"


def test_step_reference_reads_or_waits() -> None:
    assert ev({"$step": "a", "path": "v"}) == 1
    assert ev({"$from": {"step": "a"}, "path": "$.v"}) == 1
    pending = ev({"x": {"$step": "b"}, "y": [{"$step": "c"}]})
    assert isinstance(pending, Pending) and pending.steps == {"b", "c"}


def test_skipped_reference_skips_the_reader_unless_on_skip() -> None:
    waiting = ev({"x": {"$step": "s"}, "y": {"$step": "later"}})
    assert isinstance(waiting, Pending) and waiting.steps == {"later"}
    assert ev({"x": {"$step": "s"}, "y": {"$step": "a"}}) is SKIPPED
    assert ev([{"$step": "a"}, {"$step": "s"}]) is SKIPPED
    on_skip = {"action": "useDefault", "defaultValue": 7}
    assert ev({"$step": "s", "onSkip": on_skip}) == 7
    assert ev({"$step": "s"}, skipped_as_null=True) is None


def test_variables_and_literals() -> None:
    assert ev({"$variable": "env"}) == "prod"
    assert ev({"$variable": "absent", "default": 3}) == 3
    assert ev({"$literal": {"$step": "not evaluated"}}) == {"$step": "not evaluated"}


@pytest.mark.parametrize("falsy", [None, False, 0, "", [], {}])
def test_if_follows_json_truthiness(falsy: Any) -> None:
    expr = {"$if": {"$literal": falsy}, "then": "yes", "else": "no"}
    assert ev(expr) == "no"
    assert ev({"$if": {"$literal": falsy}, "then": "yes"}) is None


def test_if_needs_only_the_branch_it_takes() -> None:
    taken = ev({"$if": {"$step": "a", "path": "v"}, "then": {"$step": "b"},
                "else": {"$step": "c"}})
    assert isinstance(taken, Pending) and taken.steps == {"b"}
    waiting = ev({"$if": {"$step": "cond"}, "then": {"$step": "b"}})
    assert isinstance(waiting, Pending) and waiting.steps == {"cond"}


def test_coalesce_is_lazy_and_passes_over_null_and_skipped() -> None:
    assert ev({"$coalesce": [{"$step": "nul"}, {"$step": "s"}, {"$step": "a"}, {"$step": "z"}]}) \
        == {"v": 1}
    first = ev({"$coalesce": [{"$step": "b"}, {"$step": "c"}]})
    assert isinstance(first, Pending) and first.steps == {"b"}
    assert ev({"$coalesce": [None, {"$input": "missing"}]}) is None


def test_static_references_cover_every_branch() -> None:
    expr = compile_expression({"$if": {"$step": "a"}, "then": {"$step": "b"},
                               "else": {"$coalesce": [{"$step": "c"}]}, })
    assert expr.step_refs() == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ({"x": {"$step": 3}}, "x.$step"),
        ({"$if": True}, ""),
        ({"y": {"$coalesce": "nope"}}, "y.$coalesce"),
        ({"$step": "a", "$input": "b"}, ""),
        ({"z": [{"$step": "a", "onSkip": {"action": "explode"}}]}, "z[0].onSkip"),
        ({"$input": "$.a["}, "$input"),
    ],
)
def test_malformed_expressions_name_the_field(expr: Any, field: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_expression(expr)
    assert info.value.field == field


def test_literal_inside_a_constant_object_is_unwrapped() -> None:
    assert ev({"a": 1, "b": {"$literal": {"$step": "x"}}}) == {"a": 1, "b": {"$step": "x"}}
    assert ev([{"$literal": {"$input": "y"}}]) == [{"$input": "y"}]
