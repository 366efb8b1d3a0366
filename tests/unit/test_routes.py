"""Route patterns, rule matching and route validation (stepflow_stream.config.routes)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepflow_stream.config import (
    RoutePatternError,
    RouteTable,
    compile_pattern,
    parse_routes,
)
from stepflow_stream.core.scheduler import Router
from stepflow_stream.core.source import parse_document
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode

SPEC_ROUTES = {
    "/python/{*component}": [{"plugin": "cpu_components"}],
    "/mock": [{"plugin": "mock"}],
    "/{*component}": [{"plugin": "builtin"}],
}
PLUGINS = ("builtin", "cpu_components", "mock", "other")


def table(routes: dict[str, Any]) -> RouteTable:
    return parse_routes(routes, plugins=PLUGINS, source="cfg.yml")


def routes_from_yaml(text: str) -> RouteTable:
    """Parse a YAML ``routes`` section so that errors carry line numbers."""
    document = parse_document(text, "cfg.yml", ConfigError)
    return parse_routes(document["routes"], plugins=PLUGINS, source="cfg.yml")


def route_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        routes_from_yaml(text)
    return caught.value


# Patterns ----------------------------------------------------------------------------------


def test_bare_prefix_means_prefix_and_rest() -> None:
    pattern = compile_pattern("/mock")
    assert pattern.captures == ("component",)
    assert pattern.match("/mock/one_output") == {"component": "one_output"}
    assert pattern.match("/mock/a/b") == {"component": "a/b"}
    assert pattern.match("/mock") is None
    assert pattern.match("/mocked/x") is None


def test_root_pattern_matches_every_path() -> None:
    for text in ("/", "/{*component}"):
        pattern = compile_pattern(text)
        assert pattern.match("/builtin/eval") == {"component": "builtin/eval"}
        assert pattern.match("/") is None


def test_one_segment_placeholder_and_rest_placeholder() -> None:
    pattern = compile_pattern("/svc/{group}/{*rest}")
    assert pattern.match("/svc/g1/a/b") == {"group": "g1", "rest": "a/b"}
    assert pattern.match("/svc/g1") is None
    assert pattern.component_capture == "rest"


def test_literals_are_not_regular_expressions() -> None:
    pattern = compile_pattern("/a.b/{*component}")
    assert pattern.match("/a.b/x") is not None
    assert pattern.match("/aXb/x") is None


def test_rest_placeholder_rejects_empty_segments() -> None:
    pattern = compile_pattern("/mock")
    assert pattern.match("/mock/") is None
    assert pattern.match("/mock//x") is None
    assert pattern.match("/mock/x/") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mock", "starts with '/'"),
        ("/{*x}/y", "'{*x}' must be the last segment"),
        ("/{a}/{a}", "placeholder 'a' appears twice"),
        ("/v{version}/x", "segment 'v{version}'"),
        ("/{bad-name}", "segment '{bad-name}'"),
        ("/a//b", "empty segment"),
        ("/mock/", "empty segment"),
    ],
)
def test_malformed_patterns(text: str, reason: str) -> None:
    with pytest.raises(RoutePatternError, match=re.escape(reason)):
        compile_pattern(text)


# Routing -----------------------------------------------------------------------------------


def test_spec_example_routes() -> None:
    routes = table(SPEC_ROUTES)
    assert routes.route("/mock/one_output", {}) == ("mock", "/one_output")
    assert routes.route("/python/udf", {}) == ("cpu_components", "/udf")
    assert routes.route("/python/pkg/udf", {}) == ("cpu_components", "/pkg/udf")
    assert routes.route("/builtin/eval", {}) == ("builtin", "/builtin/eval")


def test_route_table_is_a_router() -> None:
    router: Router = table(SPEC_ROUTES)
    assert router.route("/mock/x", None) == ("mock", "/x")


def test_route_keys_are_tried_in_config_order() -> None:
    routes = table({"/{*component}": [{"plugin": "builtin"}], "/mock": [{"plugin": "mock"}]})
    assert routes.route("/mock/x", {}) == ("builtin", "/mock/x")


def test_component_name_is_the_component_capture_else_the_last_capture() -> None:
    routes = table({
        "/svc/{component}/{version}": [{"plugin": "other"}],
        "/api/{group}/{op}": [{"plugin": "mock"}],
    })
    assert routes.route("/svc/udf/v2", {}) == ("other", "/udf")
    assert routes.route("/api/g/op1", {}) == ("mock", "/op1")


def test_conditions_choose_the_rule() -> None:
    routes = table({
        "/llm": [
            {"plugin": "other", "conditions": [{"path": "$.model", "value": "big"}]},
            {"plugin": "mock", "conditions": [{"path": "$.opts.fast", "value": True}]},
            {"plugin": "builtin"},
        ],
    })
    assert routes.route("/llm/chat", {"model": "big"}) == ("other", "/chat")
    assert routes.route("/llm/chat", {"model": "small", "opts": {"fast": True}}) == (
        "mock", "/chat",
    )
    assert routes.route("/llm/chat", {"model": "small"}) == ("builtin", "/chat")
    assert routes.route("/llm/chat", None) == ("builtin", "/chat")


def test_all_conditions_of_a_rule_must_match() -> None:
    routes = table({
        "/llm": [
            {
                "plugin": "other",
                "conditions": [{"path": "a", "value": 1}, {"path": "$.b[0]", "value": "x"}],
            },
            {"plugin": "mock"},
        ],
    })
    assert routes.route("/llm/c", {"a": 1, "b": ["x"]}) == ("other", "/c")
    assert routes.route("/llm/c", {"a": 1, "b": ["y"]}) == ("mock", "/c")
    assert routes.route("/llm/c", {"b": ["x"]}) == ("mock", "/c")


def test_condition_values_compare_as_json() -> None:
    routes = table({
        "/x": [
            {"plugin": "other", "conditions": [{"path": "flag", "value": True}]},
            {"plugin": "mock", "conditions": [{"path": "obj", "value": {"a": [1, False]}}]},
            {"plugin": "builtin"},
        ],
    })
    assert routes.route("/x/c", {"flag": True}) == ("other", "/c")
    assert routes.route("/x/c", {"flag": 1}) == ("builtin", "/c")
    assert routes.route("/x/c", {"obj": {"a": [1.0, False]}}) == ("mock", "/c")
    assert routes.route("/x/c", {"obj": {"a": [1, 0]}}) == ("builtin", "/c")
    assert routes.route("/x/c", {"obj": {"a": [1, False], "b": 2}}) == ("builtin", "/c")


def test_conditions_are_evaluated_per_call_although_plans_are_cached() -> None:
    routes = table({
        "/x": [
            {"plugin": "other", "conditions": [{"path": "k", "value": 1}]},
            {"plugin": "mock"},
        ],
    })
    for _ in range(3):
        assert routes.route("/x/c", {"k": 1}) == ("other", "/c")
        assert routes.route("/x/c", {"k": 2}) == ("mock", "/c")


def test_component_allow_and_deny() -> None:
    routes = table({
        "/python": [
            {"plugin": "other", "componentAllow": ["udf", "/analyzer"]},
            {"plugin": "mock", "componentDeny": ["secret"]},
        ],
        "/{*component}": [{"plugin": "builtin"}],
    })
    assert routes.route("/python/udf", {}) == ("other", "/udf")
    assert routes.route("/python/analyzer", {}) == ("other", "/analyzer")
    assert routes.route("/python/other", {}) == ("mock", "/other")
    assert routes.route("/python/secret", {}) == ("builtin", "/python/secret")


def test_snake_case_rule_keys_are_accepted() -> None:
    routes = table({
        "/python": [
            {"plugin": "other", "component_allow": ["udf"]},
            {"plugin": "mock", "component_deny": ["udf2"]},
            {"plugin": "builtin"},
        ],
    })
    assert routes.route("/python/udf", {}) == ("other", "/udf")
    assert routes.route("/python/udf2", {}) == ("builtin", "/udf2")


def test_rename_with_placeholders() -> None:
    routes = table({
        "/models/{family}/{*component}": [
            {"plugin": "other", "component": "/{family}_{component}"},
        ],
        "/legacy": [{"plugin": "mock", "component": "new_name"}],
        "/v1/{op}": [{"plugin": "builtin", "component": "/api/{*op}"}],
    })
    assert routes.route("/models/gpt/chat", {}) == ("other", "/gpt_chat")
    assert routes.route("/legacy/old", {}) == ("mock", "/new_name")
    assert routes.route("/v1/eval", {}) == ("builtin", "/api/eval")


def test_allow_lists_see_the_name_before_the_rename() -> None:
    routes = table({
        "/x": [{"plugin": "other", "componentAllow": ["a"], "component": "/renamed"}],
        "/{*component}": [{"plugin": "builtin"}],
    })
    assert routes.route("/x/a", {}) == ("other", "/renamed")
    assert routes.route("/x/renamed", {}) == ("builtin", "/x/renamed")


def test_falls_through_to_a_later_route_key_when_no_rule_matches() -> None:
    routes = table({
        "/python": [
            {"plugin": "other", "conditions": [{"path": "gpu", "value": True}]},
            {"plugin": "mock", "componentAllow": ["only_this"]},
        ],
        "/python/{*component}": [{"plugin": "cpu_components"}],
        "/{*component}": [{"plugin": "builtin"}],
    })
    assert routes.route("/python/udf", {"gpu": True}) == ("other", "/udf")
    assert routes.route("/python/only_this", {}) == ("mock", "/only_this")
    assert routes.route("/python/udf", {}) == ("cpu_components", "/udf")


def test_no_route_is_a_non_retryable_invalid_input_error() -> None:
    routes = table({"/python": [{"plugin": "other"}], "/mock": [{"plugin": "mock"}]})
    with pytest.raises(ComponentError) as caught:
        routes.route("/x", {})
    error = caught.value
    assert error.code == ErrorCode.INVALID_INPUT
    assert error.retryable is False
    assert error.message.startswith("no route for component '/x': no route pattern matches it")
    assert "'/python', '/mock'" in error.message


def test_no_route_when_no_condition_matches_says_so() -> None:
    routes = table({"/x": [{"plugin": "other", "conditions": [{"path": "k", "value": 1}]}]})
    with pytest.raises(ComponentError, match="no rule's conditions match the step input"):
        routes.route("/x/c", {"k": 2})


def test_routing_is_fast() -> None:
    routes = table(SPEC_ROUTES)
    start = time.perf_counter()
    for _ in range(20_000):
        routes.route("/mock/one_output", {"a": 1})
    # a few µs per call is the goal; the bound is loose so that slow CI machines pass
    assert (time.perf_counter() - start) / 20_000 < 50e-6


# Static checks -----------------------------------------------------------------------------


def test_check_passes_for_routable_components() -> None:
    routes = table({"/x": [{"plugin": "other", "conditions": [{"path": "k", "value": 1}]}]})
    routes.check("/x/anything")


def test_check_names_the_component_and_lists_the_patterns() -> None:
    routes = table({"/python/{*component}": [{"plugin": "other"}], "/mock": [{"plugin": "mock"}]})
    with pytest.raises(ConfigError) as caught:
        routes.check("/nothing/here")
    message = str(caught.value)
    assert message.startswith("cfg.yml: no route for component '/nothing/here'")
    assert "'/python/{*component}', '/mock'" in message
    assert "'/nothing/here'" in caught.value.reason


def test_check_fails_when_every_rule_excludes_the_component() -> None:
    routes = table({
        "/python": [
            {"plugin": "other", "componentAllow": ["udf"]},
            {"plugin": "mock", "componentDeny": ["secret"]},
        ],
    })
    routes.check("/python/udf")
    with pytest.raises(ConfigError, match=r"every rule of the matching routes \('/python'\)"):
        routes.check("/python/secret")


def test_targets_and_plugins_for() -> None:
    routes = table({
        "/python": [
            {"plugin": "other", "conditions": [{"path": "gpu", "value": True}]},
            {"plugin": "other", "conditions": [{"path": "gpu", "value": "yes"}]},
            {"plugin": "mock", "componentDeny": ["udf"]},
        ],
        "/python/{*component}": [{"plugin": "cpu_components"}],
        "/{*component}": [{"plugin": "builtin"}],
    })
    assert routes.targets("/python/udf") == [("other", "/udf"), ("cpu_components", "/udf")]
    assert routes.plugins_for("/python/udf") == ["other", "cpu_components"]
    # a rule without conditions ends the search: later keys are unreachable
    assert routes.plugins_for("/python/x") == ["other", "mock"]
    assert routes.plugins_for("/elsewhere") == ["builtin"]
    assert table({"/a": [{"plugin": "mock"}]}).plugins_for("/b/c") == []


# Validation --------------------------------------------------------------------------------


def test_unknown_plugin_names_route_rule_plugin_and_line() -> None:
    error = route_error(
        "routes:\n"
        "  /mock:\n"
        "    - plugin: mock\n"
        "    - plugin: mokc\n"
    )
    assert error.location.file == "cfg.yml"
    assert error.location.line == 4
    assert "route '/mock', rule 2 names unknown plugin 'mokc'" in error.reason
    assert "plugins: builtin, cpu_components, mock, other" in error.reason


def test_unknown_plugin_when_no_plugins_are_configured() -> None:
    with pytest.raises(ConfigError, match="none are configured"):
        parse_routes({"/a": [{"plugin": "x"}]}, plugins=(), source="cfg.yml")


def test_plugins_are_not_checked_when_not_given() -> None:
    assert parse_routes({"/a": [{"plugin": "x"}]}).route("/a/b", {}) == ("x", "/b")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("routes:\n  mock: [{plugin: mock}]\n", 2,
         "route key 'mock' is not a path pattern starting with '/'"),
        ("routes:\n  5: [{plugin: mock}]\n", 2,
         "route key 5 is not a path pattern starting with '/'"),
        ("routes:\n  /a: []\n  /{*x}/y: [{plugin: mock}]\n", 2,
         "route '/a' holds a non-empty list of rules"),
        ("routes:\n  /a: [{plugin: mock}]\n  /{*x}/y: [{plugin: mock}]\n", 3,
         "route '/{*x}/y' is not a valid pattern: '{*x}' must be the last segment"),
        ("routes:\n  /a: {plugin: mock}\n", 2, "route '/a' holds a non-empty list of rules"),
        ("routes:\n  /a:\n    - component: /x\n", 3, "route '/a', rule 1 has no 'plugin'"),
        ("routes:\n  /a:\n    - mock\n", 2, "route '/a', rule 1 is a mapping"),
        ("routes:\n  /a:\n    - plugin: mock\n      conditions: {path: x, value: 1}\n", 4,
         "route '/a', rule 1: 'conditions' is a list of {path, value}"),
        ("routes:\n  /a:\n    - plugin: mock\n      conditions:\n        - {path: x}\n", 5,
         "route '/a', rule 1: condition 1 is not {path, value}"),
        ("routes:\n  /a:\n    - plugin: mock\n      conditions: [x]\n", 4,
         "route '/a', rule 1: condition 1 is not {path, value}"),
        ("routes:\n  /a:\n    - plugin: mock\n      conditions: [{path: '$.a[', value: 1}]\n", 4,
         "route '/a', rule 1: condition 1: invalid JSONPath '$.a['"),
        ("routes:\n  /a:\n    - plugin: mock\n      componentAllow: udf\n", 4,
         "route '/a', rule 1: 'componentAllow' is a list of component names"),
        ("routes:\n  /a:\n    - plugin: mock\n      componentDeny: [1]\n", 4,
         "route '/a', rule 1: 'componentDeny' is a list of component names"),
        ("routes:\n  /a/{x}:\n    - plugin: mock\n      component: /{y}\n", 4,
         "route '/a/{x}', rule 1: 'component' uses '{y}', which route '/a/{x}' does not capture"
         " (it captures {x})"),
        ("routes:\n  /a:\n    - plugin: mock\n      component: /{y\n", 4,
         "'component' '/{y' has a brace that is not a '{name}' placeholder"),
        ("routes:\n  /a:\n    - plugin: mock\n      component: 3\n", 4,
         "route '/a', rule 1: 'component' is a component name"),
        ("routes: [/a]\n", None, "'routes' is a mapping of path patterns to lists of rules"),
    ],
)
def test_route_validation_errors(text: str, line: int | None, reason: str) -> None:
    error = route_error(text)
    assert error.location.file == "cfg.yml"
    assert error.location.line == line
    assert reason in error.reason


def test_unknown_rule_keys_are_warnings() -> None:
    routes = routes_from_yaml(
        "routes:\n"
        "  /a:\n"
        "    - plugin: mock\n"
        "      componentAlow: [x]\n"
        "      conditions: [{path: k, value: 1, op: eq}]\n"
    )
    assert routes.warnings == (
        "cfg.yml:4: route '/a', rule 1: unknown key 'componentAlow' ignored",
        "cfg.yml:5: route '/a', rule 1: condition 1: unknown key 'op' ignored",
    )


# Properties --------------------------------------------------------------------------------

_SEGMENT = st.text(
    st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8
)
_NAMES = st.lists(_SEGMENT, min_size=1, max_size=5).map("/".join)


@given(_NAMES)
def test_rest_capture_round_trips(name: str) -> None:
    routes = table({"/mock": [{"plugin": "mock"}], "/{*component}": [{"plugin": "builtin"}]})
    assert routes.route("/mock/" + name, {}) == ("mock", "/" + name)
    if not name.startswith("mock/"):
        assert routes.route("/" + name, {}) == ("builtin", "/" + name)
    routes.check("/" + name)
