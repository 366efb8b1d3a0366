"""The builtin plugin, component by component, against an in-memory ExecutionContext."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from fake_context import FakeContext

from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins.base import PluginOptions
from stepflow_stream.plugins.builtin import BuiltinPlugin

FLOW: JSONObject = {"steps": [], "output": {"$input": "$"}}

COMPONENTS = {
    "/create_messages",
    "/eval",
    "/map",
    "/iterate",
    "/put_blob",
    "/get_blob",
    "/load_file",
    "/noop",
    "/sleep",
    "/openai",
}


@pytest.fixture
def plugin(tmp_path: Path) -> BuiltinPlugin:
    return BuiltinPlugin(PluginOptions(name="builtin"), base_dir=tmp_path)


async def invalid(
    plugin: BuiltinPlugin, component: str, input: JSON, context: FakeContext | None = None
) -> ComponentError:
    """Run a call that must fail with a non-retryable INVALID_INPUT; return the error."""
    with pytest.raises(ComponentError) as caught:
        await plugin.execute(component, input, context or FakeContext())
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert caught.value.retryable is False
    assert caught.value.message.startswith(f"{component}: ")
    return caught.value


def success(result: JSON) -> FlowResult:
    return FlowResult(result=result)


def failure(code: str, message: str) -> FlowResult:
    return FlowResult(error=ErrorInfo(code, message))


# The plugin -------------------------------------------------------------------------------------


def test_has_component_is_exact(plugin: BuiltinPlugin) -> None:
    for name in COMPONENTS:
        assert plugin.has_component(name) is True
    assert plugin.has_component("/nope") is False
    assert plugin.has_component("noop") is False
    assert plugin.has_component("/builtin/noop") is False


async def test_list_components_has_every_component_with_valid_schemas(
    plugin: BuiltinPlugin,
) -> None:
    infos = await plugin.list_components()
    assert {info.component for info in infos} == COMPONENTS
    for info in infos:
        assert info.description
        assert info.input_schema is not None
        assert info.output_schema is not None
        jsonschema.Draft202012Validator.check_schema(info.input_schema)
        jsonschema.Draft202012Validator.check_schema(info.output_schema)


async def test_list_components_returns_copies(plugin: BuiltinPlugin) -> None:
    first = await plugin.list_components()
    assert first[0].input_schema is not None
    first[0].input_schema["type"] = "changed"
    second = await plugin.list_components()
    assert second[0].input_schema is not None
    assert second[0].input_schema["type"] == "object"


@pytest.mark.parametrize(
    ("component", "input"),
    [
        ("/create_messages", {"system_instructions": "be brief", "user_prompt": "hi"}),
        ("/put_blob", {"data": [1, 2]}),
        ("/eval", {"flow": FLOW, "input": 3}),
        ("/map", {"workflow": FLOW, "items": [1, 2], "max_concurrency": 1}),
        ("/iterate", {"flow": FLOW, "initial_input": {"result": 1}}),
        ("/noop", {}),
        ("/sleep", {"duration_ms": 0, "passthrough": {"x": 1}}),
    ],
)
async def test_outputs_match_the_declared_schemas(
    plugin: BuiltinPlugin, component: str, input: JSON
) -> None:
    info = next(i for i in await plugin.list_components() if i.component == component)
    jsonschema.validate(input, info.input_schema or {})
    output = await plugin.execute(component, input, FakeContext(lambda flow, value: success(value)))
    jsonschema.validate(output, info.output_schema or {})


async def test_unknown_component_is_named(plugin: BuiltinPlugin) -> None:
    with pytest.raises(ComponentError) as caught:
        await plugin.execute("/nope", {}, FakeContext())
    assert "'/nope'" in caught.value.message
    assert "builtin plugin 'builtin'" in caught.value.message
    assert caught.value.retryable is False


def test_openai_settings_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="openai_model"):
        BuiltinPlugin(
            PluginOptions(name="builtin", settings={"openai_model": 4}), base_dir=tmp_path
        )


@pytest.mark.parametrize("component", sorted(COMPONENTS - {"/noop"}))
async def test_non_object_input_is_rejected(plugin: BuiltinPlugin, component: str) -> None:
    error = await invalid(plugin, component, [1, 2])
    assert "input must be an object, got array" in error.message


# /create_messages -------------------------------------------------------------------------------


async def test_create_messages_puts_the_system_message_first(plugin: BuiltinPlugin) -> None:
    output = await plugin.execute(
        "/create_messages",
        {"system_instructions": "be brief", "user_prompt": "hello"},
        FakeContext(),
    )
    assert output == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ]
    }


@pytest.mark.parametrize(
    "input", [{"user_prompt": "hello"}, {"system_instructions": None, "user_prompt": "hello"}]
)
async def test_create_messages_without_system(plugin: BuiltinPlugin, input: JSONObject) -> None:
    output = await plugin.execute("/create_messages", input, FakeContext())
    assert output == {"messages": [{"role": "user", "content": "hello"}]}


async def test_create_messages_errors_name_the_field(plugin: BuiltinPlugin) -> None:
    missing = await invalid(plugin, "/create_messages", {"system_instructions": "x"})
    assert "missing field 'user_prompt'" in missing.message
    wrong = await invalid(plugin, "/create_messages", {"user_prompt": 3})
    assert "field 'user_prompt' must be a string, got integer" in wrong.message
    system = await invalid(
        plugin, "/create_messages", {"user_prompt": "x", "system_instructions": ["a"]}
    )
    assert "field 'system_instructions' must be a string, got array" in system.message


# /put_blob and /get_blob ------------------------------------------------------------------------


async def test_put_blob_id_is_the_sha256_of_compact_unescaped_json(plugin: BuiltinPlugin) -> None:
    value = {"name": "Zoë ✓ 日本", "items": [1, 2.5, None, True], "nested": {"b": 1, "a": 2}}
    context = FakeContext()
    output = await plugin.execute("/put_blob", {"data": value}, context)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert output == {"blob_id": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    escaped = json.dumps(value, separators=(",", ":")).encode("utf-8")
    assert output["blob_id"] != hashlib.sha256(escaped).hexdigest()
    assert context.blobs[output["blob_id"]] == value
    assert context.blob_types[output["blob_id"]] == "data"


async def test_put_blob_of_a_flow_then_get_blob(plugin: BuiltinPlugin) -> None:
    context = FakeContext()
    put = await plugin.execute("/put_blob", {"data": FLOW, "blob_type": "flow"}, context)
    assert context.blob_types[put["blob_id"]] == "flow"
    got = await plugin.execute("/get_blob", {"blob_id": put["blob_id"]}, context)
    assert got == {"data": FLOW}


async def test_put_blob_stores_null(plugin: BuiltinPlugin) -> None:
    context = FakeContext()
    put = await plugin.execute("/put_blob", {"data": None}, context)
    assert await plugin.execute("/get_blob", put, context) == {"data": None}


async def test_put_blob_errors_name_the_field(plugin: BuiltinPlugin) -> None:
    missing = await invalid(plugin, "/put_blob", {"blob_type": "data"})
    assert "missing field 'data'" in missing.message
    kind = await invalid(plugin, "/put_blob", {"data": 1, "blob_type": "image"})
    assert "field 'blob_type' must be 'data' or 'flow', got 'image'" in kind.message
    flow = await invalid(plugin, "/put_blob", {"data": "x", "blob_type": "flow"})
    assert "field 'data' must be an object (a flow)" in flow.message


async def test_get_blob_errors(plugin: BuiltinPlugin) -> None:
    missing = await invalid(plugin, "/get_blob", {})
    assert "missing field 'blob_id'" in missing.message
    wrong = await invalid(plugin, "/get_blob", {"blob_id": 7})
    assert "field 'blob_id' must be a string, got integer" in wrong.message
    with pytest.raises(ComponentError, match="no blob abc"):
        await plugin.execute("/get_blob", {"blob_id": "abc"}, FakeContext())


# /eval ------------------------------------------------------------------------------------------


async def test_eval_runs_an_inline_flow(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, value: success({"doubled": value * 2}))
    output = await plugin.execute("/eval", {"flow": FLOW, "input": 21}, context)
    assert output == {
        "result": {"outcome": "success", "result": {"doubled": 42}},
        "run_id": "run-1/sub-0",
    }
    assert context.sub_runs == [(FLOW, 21)]


async def test_eval_runs_a_flow_from_a_blob(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, value: success(flow["name"]))
    named = {**FLOW, "name": "stored"}
    blob_id = await context.put_blob(named, "flow")
    output = await plugin.execute("/eval", {"flow_id": blob_id, "input": None}, context)
    assert output["result"] == {"outcome": "success", "result": "stored"}


async def test_eval_prefers_the_inline_flow_when_both_are_given(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, value: success(flow.get("name")))
    output = await plugin.execute(
        "/eval", {"flow": {**FLOW, "name": "inline"}, "flow_id": "unknown", "input": 1}, context
    )
    assert output["result"]["result"] == "inline"


async def test_eval_reports_a_failed_sub_run_without_raising(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, value: failure(ErrorCode.COMPONENT_FAILED, "boom"))
    output = await plugin.execute("/eval", {"flow": FLOW, "input": 1}, context)
    assert output["result"] == {
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "boom"},
    }


async def test_eval_errors_name_the_field(plugin: BuiltinPlugin) -> None:
    neither = await invalid(plugin, "/eval", {"input": 1})
    assert "'flow'" in neither.message
    assert "'flow_id'" in neither.message
    no_input = await invalid(plugin, "/eval", {"flow": FLOW})
    assert "missing field 'input'" in no_input.message
    string_flow = await invalid(plugin, "/eval", {"flow": "abc", "input": 1})
    assert "field 'flow' must be an object" in string_flow.message
    context = FakeContext()
    blob_id = await context.put_blob([1, 2])
    not_a_flow = await invalid(plugin, "/eval", {"flow_id": blob_id, "input": 1}, context)
    assert f"blob {blob_id} holds array, not a flow" in not_a_flow.message


# /map -------------------------------------------------------------------------------------------


class ConcurrencyProbe:
    """A sub-flow that records how many runs are in flight; later items finish sooner."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, flow: JSONObject, value: JSON) -> FlowResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001 * (self.count - value))
        finally:
            self.in_flight -= 1
        if value % 3 == 0:
            return failure(ErrorCode.COMPONENT_FAILED, f"item {value}")
        return success(value * 10)


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_map_keeps_item_order_within_the_concurrency_limit(
    plugin: BuiltinPlugin, limit: int
) -> None:
    probe = ConcurrencyProbe(10)
    context = FakeContext(probe)
    items = list(range(10))
    output = await plugin.execute(
        "/map", {"workflow": FLOW, "items": items, "max_concurrency": limit}, context
    )
    assert probe.max_in_flight == limit
    expected = [
        failure(ErrorCode.COMPONENT_FAILED, f"item {i}").to_json()
        if i % 3 == 0
        else {"outcome": "success", "result": i * 10}
        for i in items
    ]
    assert output == {"results": expected, "successful": 6, "failed": 4}
    # Sub-runs start in item order, whatever order they finish in.
    assert [value for _, value in context.sub_runs] == items


async def test_map_without_a_limit_runs_every_item_at_once(plugin: BuiltinPlugin) -> None:
    probe = ConcurrencyProbe(8)
    await plugin.execute("/map", {"workflow": FLOW, "items": list(range(8))}, FakeContext(probe))
    assert probe.max_in_flight == 8


async def test_map_takes_the_workflow_from_a_blob(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, value: success([flow["name"], value]))
    blob_id = await context.put_blob({**FLOW, "name": "f"}, "flow")
    output = await plugin.execute("/map", {"workflow": blob_id, "items": ["a", "b"]}, context)
    assert [r["result"] for r in output["results"]] == [["f", "a"], ["f", "b"]]


async def test_map_of_no_items(plugin: BuiltinPlugin) -> None:
    output = await plugin.execute("/map", {"workflow": FLOW, "items": []}, FakeContext())
    assert output == {"results": [], "successful": 0, "failed": 0}


async def test_map_cancels_the_other_sub_runs_when_one_raises(plugin: BuiltinPlugin) -> None:
    cancelled: list[JSON] = []

    async def run(flow: JSONObject, value: JSON) -> FlowResult:
        if value == 0:
            raise ComponentError(ErrorCode.UNREACHABLE, "lost the engine")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(value)
            raise
        return success(value)

    with pytest.raises(ComponentError, match="lost the engine"):
        await plugin.execute("/map", {"workflow": FLOW, "items": [0, 1, 2]}, FakeContext(run))
    assert sorted(cancelled) == [1, 2]


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"items": []}, "missing field 'workflow'"),
        ({"workflow": 3, "items": []}, "field 'workflow' must be a flow (object) or the blob id"),
        ({"workflow": FLOW}, "missing field 'items'"),
        ({"workflow": FLOW, "items": {"a": 1}}, "field 'items' must be an array, got object"),
        (
            {"workflow": FLOW, "items": [], "max_concurrency": 0},
            "field 'max_concurrency' must be a positive integer, got integer",
        ),
        (
            {"workflow": FLOW, "items": [], "max_concurrency": True},
            "field 'max_concurrency' must be a positive integer, got boolean",
        ),
        (
            {"workflow": FLOW, "items": [], "max_concurrency": "2"},
            "field 'max_concurrency' must be a positive integer, got string",
        ),
    ],
)
async def test_map_errors_name_the_field(
    plugin: BuiltinPlugin, input: JSONObject, message: str
) -> None:
    error = await invalid(plugin, "/map", input)
    assert message in error.message


# /iterate ---------------------------------------------------------------------------------------


def count_to(limit: int) -> FakeContext:
    """A context whose sub-flow adds one to its input until it reaches ``limit``."""
    return FakeContext(lambda flow, n: success({"result": n} if n >= limit else {"next": n + 1}))


async def test_iterate_stops_when_a_pass_returns_result(plugin: BuiltinPlugin) -> None:
    context = count_to(5)
    output = await plugin.execute("/iterate", {"flow": FLOW, "initial_input": 0}, context)
    assert output == {"result": 5, "iterations": 6, "terminated": False}
    assert [value for _, value in context.sub_runs] == [0, 1, 2, 3, 4, 5]


async def test_iterate_terminates_at_max_iterations(plugin: BuiltinPlugin) -> None:
    output = await plugin.execute(
        "/iterate", {"flow": FLOW, "initial_input": 0, "max_iterations": 3}, count_to(100)
    )
    assert output == {"result": 3, "iterations": 3, "terminated": True}


async def test_iterate_defaults_to_1000_iterations(plugin: BuiltinPlugin) -> None:
    output = await plugin.execute("/iterate", {"flow": FLOW, "initial_input": 0}, count_to(10**6))
    assert output == {"result": 1000, "iterations": 1000, "terminated": True}


async def test_iterate_result_wins_over_next(plugin: BuiltinPlugin) -> None:
    context = FakeContext(lambda flow, n: success({"next": 1, "result": "done"}))
    output = await plugin.execute("/iterate", {"flow": FLOW, "initial_input": 0}, context)
    assert output == {"result": "done", "iterations": 1, "terminated": False}


async def test_iterate_takes_the_flow_from_a_blob(plugin: BuiltinPlugin) -> None:
    context = count_to(2)
    blob_id = await context.put_blob(FLOW, "flow")
    output = await plugin.execute("/iterate", {"flow": blob_id, "initial_input": 0}, context)
    assert output["result"] == 2


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(ErrorCode.COMPONENT_FAILED, True), (ErrorCode.INVALID_INPUT, False)],
)
async def test_iterate_raises_the_failed_pass_error_code(
    plugin: BuiltinPlugin, code: str, retryable: bool
) -> None:
    context = FakeContext(
        lambda flow, n: failure(code, "bad pass") if n == 2 else success({"next": n + 1})
    )
    with pytest.raises(ComponentError) as caught:
        await plugin.execute("/iterate", {"flow": FLOW, "initial_input": 0}, context)
    assert caught.value.code == code
    assert caught.value.retryable is retryable
    assert caught.value.message == "/iterate: pass 3 failed: bad pass"
    assert caught.value.data == {
        "iteration": 3,
        "run_id": "run-1/sub-2",
        "error": {"code": code, "message": "bad pass"},
    }


@pytest.mark.parametrize("result", [{"value": 1}, 5, None])
async def test_iterate_rejects_a_pass_without_next_or_result(
    plugin: BuiltinPlugin, result: JSON
) -> None:
    context = FakeContext(lambda flow, n: success(result))
    with pytest.raises(ComponentError) as caught:
        await plugin.execute("/iterate", {"flow": FLOW, "initial_input": 0}, context)
    assert caught.value.code == ErrorCode.COMPONENT_FAILED
    assert caught.value.retryable is False
    assert "without 'next' or 'result'" in caught.value.message


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"initial_input": 0}, "missing field 'flow'"),
        ({"flow": FLOW}, "missing field 'initial_input'"),
        (
            {"flow": FLOW, "initial_input": 0, "max_iterations": -1},
            "field 'max_iterations' must be a positive integer",
        ),
    ],
)
async def test_iterate_errors_name_the_field(
    plugin: BuiltinPlugin, input: JSONObject, message: str
) -> None:
    error = await invalid(plugin, "/iterate", input)
    assert message in error.message


# /load_file -------------------------------------------------------------------------------------


async def test_load_file_infers_the_format_from_the_extension(
    plugin: BuiltinPlugin, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text('{"b": [1, "é"]}', encoding="utf-8")
    (tmp_path / "c.yml").write_text("name: x\nwhen: 2024-01-02\nn: 3\n", encoding="utf-8")
    (tmp_path / "d.md").write_text("# héllo\n", encoding="utf-8")
    context = FakeContext()

    json_file = await plugin.execute("/load_file", {"path": "data/a.json"}, context)
    size = len('{"b": [1, "é"]}'.encode())
    assert json_file == {
        "data": {"b": [1, "é"]},
        "metadata": {"path": "data/a.json", "size": size, "format": "json"},
    }
    yaml_file = await plugin.execute("/load_file", {"path": "c.yml"}, context)
    assert yaml_file["data"] == {"name": "x", "when": "2024-01-02", "n": 3}
    assert yaml_file["metadata"]["format"] == "yaml"
    text_file = await plugin.execute("/load_file", {"path": "./d.md"}, context)
    assert text_file["data"] == "# héllo\n"
    assert text_file["metadata"] == {"path": "d.md", "size": 9, "format": "text"}


async def test_load_file_format_overrides_the_extension(
    plugin: BuiltinPlugin, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("[1, 2]")
    output = await plugin.execute("/load_file", {"path": "a.txt", "format": "json"}, FakeContext())
    assert output["data"] == [1, 2]
    as_text = await plugin.execute("/load_file", {"path": "a.txt", "format": None}, FakeContext())
    assert as_text["data"] == "[1, 2]"


async def test_load_file_allows_dot_dot_that_stays_inside(
    plugin: BuiltinPlugin, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.json").write_text("1")
    output = await plugin.execute("/load_file", {"path": "sub/../a.json"}, FakeContext())
    assert output["data"] == 1
    assert output["metadata"]["path"] == "a.json"


async def test_load_file_follows_symlinks_that_stay_inside(
    plugin: BuiltinPlugin, tmp_path: Path
) -> None:
    (tmp_path / "a.json").write_text("2")
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    output = await plugin.execute("/load_file", {"path": "link.json"}, FakeContext())
    assert output["data"] == 2


@pytest.fixture
def confined(tmp_path: Path) -> BuiltinPlugin:
    """A plugin confined to ``tmp_path/work``, with a secret file next to it."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "secret.json").write_text('{"key": "s3cret"}')
    (work / "out.json").symlink_to(tmp_path / "secret.json")
    (work / "outdir").symlink_to(tmp_path)
    return BuiltinPlugin(PluginOptions(name="builtin"), base_dir=work)


@pytest.mark.parametrize(
    "path_of",
    [
        lambda root: "../secret.json",
        lambda root: "sub/../../secret.json",
        lambda root: str(root / "secret.json"),
        lambda root: str(root / "work" / "out.json"),
        lambda root: "out.json",
        lambda root: "outdir/secret.json",
        lambda root: "..",
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "absolute-inside", "symlink", "symlink-dir", "up"],
)
async def test_load_file_refuses_paths_outside_the_working_directory(
    confined: BuiltinPlugin, tmp_path: Path, path_of: Callable[[Path], str]
) -> None:
    path = path_of(tmp_path)
    error = await invalid(confined, "/load_file", {"path": path})
    assert f"path {path!r} is outside the working directory" in error.message
    assert "s3cret" not in error.message


async def test_load_file_errors(plugin: BuiltinPlugin, tmp_path: Path) -> None:
    missing = await invalid(plugin, "/load_file", {})
    assert "missing field 'path'" in missing.message
    no_file = await invalid(plugin, "/load_file", {"path": "nope.json"})
    assert "no file at 'nope.json'" in no_file.message
    fmt = await invalid(plugin, "/load_file", {"path": "a", "format": "xml"})
    assert "field 'format' must be json, yaml or text, got 'xml'" in fmt.message

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ComponentError) as caught:
        await plugin.execute("/load_file", {"path": "bad.json"}, FakeContext())
    assert caught.value.code == ErrorCode.COMPONENT_FAILED
    assert caught.value.retryable is False
    assert "'bad.json' is not valid json" in caught.value.message


# /noop and /sleep -------------------------------------------------------------------------------


async def test_noop_returns_a_fresh_empty_object(plugin: BuiltinPlugin) -> None:
    context = FakeContext()
    first = await plugin.execute("/noop", {}, context)
    second = await plugin.execute("/noop", None, context)
    assert first == second == {}
    assert first is not second


async def test_sleep_returns_the_passthrough(plugin: BuiltinPlugin) -> None:
    context = FakeContext()
    passthrough = {"x": [1, 2]}
    assert (
        await plugin.execute("/sleep", {"duration_ms": 1, "passthrough": passthrough}, context)
        == passthrough
    )
    assert await plugin.execute("/sleep", {"duration_ms": 0.5}, context) == {}
    assert await plugin.execute("/sleep", {"duration_ms": 0, "passthrough": None}, context) is None


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "missing field 'duration_ms'"),
        ({"duration_ms": "5"}, "field 'duration_ms' must be a number, got string"),
        ({"duration_ms": True}, "field 'duration_ms' must be a number, got boolean"),
        ({"duration_ms": -1}, "field 'duration_ms' must be >= 0, got -1"),
    ],
)
async def test_sleep_errors_name_the_field(
    plugin: BuiltinPlugin, input: JSONObject, message: str
) -> None:
    error = await invalid(plugin, "/sleep", input)
    assert message in error.message


# /openai (no network: only the failures before a request) --------------------------------------


async def test_openai_without_a_key_is_not_retryable(
    plugin: BuiltinPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ComponentError) as caught:
        await plugin.execute("/openai", {"messages": messages}, FakeContext())
    assert caught.value.retryable is False
    assert "OPENAI_API_KEY" in caught.value.message


async def test_openai_checks_its_messages(plugin: BuiltinPlugin) -> None:
    error = await invalid(plugin, "/openai", {"messages": [{"role": "user"}]})
    assert "messages[0] must be an object with string 'role' and 'content'" in error.message
    missing = await invalid(plugin, "/openai", {})
    assert "missing field 'messages'" in missing.message
