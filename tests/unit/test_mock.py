"""The mock plugin: behaviors keyed by whole inputs, attempt-indexed lists, config errors."""

from __future__ import annotations

import pytest
from fake_context import FakeContext

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.source import parse_document
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins.base import PluginOptions
from stepflow_stream.plugins.mock import MockPlugin

CONFIG = """
plugins:
  mock:
    type: mock
    components:
      /one_output:
        description: Echo b for a.
        input_schema:
          type: object
          properties: {input: {type: string}}
          required: [input]
        output_schema: {type: object}
        behaviors:
          {input: "a"}: {outcome: success, result: {output: b}}
          {input: "broken"}:
            outcome: failed
            error: {code: COMPONENT_FAILED, message: "it broke", data: {why: disk}}
          {input: "flaky"}:
            - {outcome: failed, error: {code: UNREACHABLE, message: "try again"}}
            - {outcome: failed, error: {code: TIMEOUT, message: "once more"}}
            - {outcome: success, result: {output: finally}}
      /nested:
        behaviors:
          {user: {name: Zoë, tags: [x, y]}, n: 1}: {outcome: success, result: matched}
          [1, 2]: {outcome: success, result: list}
          plain: {outcome: success, result: {from: string}}
          42: {outcome: success, result: {from: number}}
          true: {outcome: success, result: {from: boolean}}
          null: {outcome: success, result: {from: null}}
      no_slash:
        behaviors:
          {}: {outcome: success, result: {}}
"""


def mock_from(text: str, name: str = "mock") -> MockPlugin:
    document = parse_document(text, "stepflow-config.yml", ConfigError)
    return MockPlugin(PluginOptions(name=name, settings=document["plugins"][name]))


@pytest.fixture
def mock() -> MockPlugin:
    return mock_from(CONFIG)


async def test_a_mapping_key_matches_the_input(mock: MockPlugin) -> None:
    output = await mock.execute("/one_output", {"input": "a"}, FakeContext())
    assert output == {"output": "b"}


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        ({"n": 1, "user": {"tags": ["x", "y"], "name": "Zoë"}}, "matched"),
        ({"user": {"name": "Zoë", "tags": ["x", "y"]}, "n": 1}, "matched"),
        ([1, 2], "list"),
        ("plain", {"from": "string"}),
        (42, {"from": "number"}),
        (True, {"from": "boolean"}),
        (None, {"from": None}),
    ],
)
async def test_keys_compare_by_canonical_json(
    mock: MockPlugin, input: JSON, expected: JSON
) -> None:
    assert await mock.execute("/nested", input, FakeContext()) == expected


async def test_scalars_of_different_json_types_do_not_collide(mock: MockPlugin) -> None:
    # In a Python dict 1 == True; as JSON they are different inputs.
    with pytest.raises(ComponentError, match=r"has no behavior for input 1$"):
        await mock.execute("/nested", 1, FakeContext())
    with pytest.raises(ComponentError, match=r'has no behavior for input "42"$'):
        await mock.execute("/nested", "42", FakeContext())


async def test_a_failed_behavior_raises_a_retryable_error(mock: MockPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await mock.execute("/one_output", {"input": "broken"}, FakeContext())
    assert caught.value.code == ErrorCode.COMPONENT_FAILED
    assert caught.value.message == "it broke"
    assert caught.value.retryable is True
    assert caught.value.data == {"why": "disk"}


async def test_a_list_is_served_by_attempt_and_its_last_item_repeats(mock: MockPlugin) -> None:
    outcomes: list[JSON] = []
    for attempt in range(1, 6):
        try:
            outcomes.append(
                await mock.execute("/one_output", {"input": "flaky"}, FakeContext(attempt=attempt))
            )
        except ComponentError as exc:
            assert exc.retryable is True
            outcomes.append(f"{exc.code}: {exc.message}")
    assert outcomes == [
        "UNREACHABLE: try again",
        "TIMEOUT: once more",
        {"output": "finally"},
        {"output": "finally"},
        {"output": "finally"},
    ]


async def test_an_input_without_behavior_is_not_retryable(mock: MockPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await mock.execute("/one_output", {"input": "zzz"}, FakeContext())
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert caught.value.retryable is False
    assert caught.value.message == (
        'mock component \'/one_output\' has no behavior for input {"input":"zzz"}'
    )


async def test_a_long_input_is_shortened_in_the_message(mock: MockPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await mock.execute("/nested", "x" * 1000, FakeContext())
    assert caught.value.message.endswith("...")
    assert len(caught.value.message) < 400


async def test_the_input_schema_is_checked_first(mock: MockPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await mock.execute("/one_output", {"input": 7}, FakeContext())
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert caught.value.retryable is False
    assert caught.value.message.startswith(
        "input to mock component '/one_output' does not match its input schema: $.input:"
    )


async def test_an_unknown_component_is_named(mock: MockPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await mock.execute("/two_outputs", {}, FakeContext())
    assert "mock plugin 'mock' has no component '/two_outputs'" in caught.value.message
    assert caught.value.retryable is False


def test_has_component_is_exact(mock: MockPlugin) -> None:
    assert mock.has_component("/one_output") is True
    assert mock.has_component("/no_slash") is True
    assert mock.has_component("/one") is False
    assert mock.has_component("one_output") is False


async def test_list_components_reports_schemas(mock: MockPlugin) -> None:
    infos = {info.component: info for info in await mock.list_components()}
    assert set(infos) == {"/one_output", "/nested", "/no_slash"}
    one = infos["/one_output"]
    assert one.description == "Echo b for a."
    assert one.input_schema is not None
    assert one.input_schema["required"] == ["input"]
    assert one.output_schema == {"type": "object"}
    assert infos["/nested"].input_schema is None


async def test_results_are_fresh_copies(mock: MockPlugin) -> None:
    first = await mock.execute("/one_output", {"input": "a"}, FakeContext())
    first["output"] = "changed"
    assert await mock.execute("/one_output", {"input": "a"}, FakeContext()) == {"output": "b"}


async def test_plain_settings_work_too() -> None:
    settings: JSONObject = {
        "components": {"/echo": {"behaviors": {"hi": {"outcome": "success", "result": "ho"}}}}
    }
    mock = MockPlugin(PluginOptions(name="m", settings=settings))
    assert await mock.execute("/echo", "hi", FakeContext()) == "ho"
    assert await MockPlugin(PluginOptions(name="empty")).list_components() == []


def component(body: str) -> str:
    """A config with one mock component ``/c`` whose settings are ``body`` (indented YAML)."""
    indented = "\n".join(f"        {line}" for line in body.strip().splitlines())
    return f"plugins:\n  mocky:\n    components:\n      /c:\n{indented}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plugins:\n  mocky:\n    components: [a]\n", "'components' must be a mapping"),
        ("plugins:\n  mocky:\n    components: {1: {}}\n", "component names are strings"),
        (
            "plugins:\n  mocky:\n    components: {/c: {}, c: {}}\n",
            "component '/c': listed twice",
        ),
        ("plugins:\n  mocky:\n    components: {/c: 3}\n", "component '/c': must be a mapping"),
        (component("behaviors: [1]"), "component '/c': 'behaviors' must be a mapping"),
        (
            component("behaviors: {a: {outcome: succes, result: 1}}"),
            "component '/c': behavior for input \"a\": 'outcome' must be 'success' or 'failed', "
            "got 'succes'",
        ),
        (
            component("behaviors: {a: {outcome: success}}"),
            "behavior for input \"a\": a successful FlowResult needs 'result'",
        ),
        (
            component("behaviors: {{x: 1}: {outcome: failed, error: {message: m}}}"),
            "behavior for input {\"x\":1}: a failed FlowResult needs 'error: {code, message}'",
        ),
        (component("behaviors: {a: []}"), "a list of FlowResults must not be empty"),
        (
            component("behaviors: {a: [{outcome: success, result: 1}, 5]}"),
            'behavior for input "a", attempt 2: expected {outcome: success',
        ),
        (component("input_schema: {type: 12}"), "'input_schema' is not a valid JSON Schema"),
        (component("output_schema: [1]"), "'output_schema' must be a JSON Schema object"),
        (component("description: [1]"), "'description' must be a string"),
        (component("behaviors: {2024-01-02: {outcome: success, result: 1}}"), "not a JSON value"),
    ],
)
def test_malformed_settings_name_the_plugin_and_component(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        mock_from(text, "mocky")
    assert caught.value.message.startswith("mock plugin 'mocky'")
    assert message in caught.value.message
