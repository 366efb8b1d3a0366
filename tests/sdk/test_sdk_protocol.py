"""The component server over real HTTP: methods, plain JSON and SSE answers, callbacks, errors."""

from __future__ import annotations

import hashlib
import json

from sdk_support import HEADERS, Caller


async def test_health_reports_the_instance_id(caller: Caller) -> None:
    response = await caller.client.get(caller.url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "instanceId": "samples-1"}


async def test_initialize_and_initialized(caller: Caller) -> None:
    response = await caller.rpc("initialize", {"runtime_protocol_version": 1})
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": {"server_protocol_version": 1}}
    notified = await caller.post({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    assert notified.status_code == 202


async def test_list_reports_every_component_with_schemas(caller: Caller) -> None:
    response = await caller.rpc("components/list", {})
    infos = {info["component"]: info for info in response.json()["result"]["components"]}
    assert {"/add", "/greet", "/blobs/roundtrip", "/core/{*component}"} <= set(infos)
    add = infos["/add"]
    assert add["description"] == "Add two integers."
    assert add["input_schema"]["$defs"]["Pair"]["required"] == ["a", "b"]
    assert add["output_schema"]["$defs"]["Sum"]["properties"] == {"sum": {"type": "integer"}}
    assert infos["/greet"]["description"] == "Greet someone (a plain function, run in a thread)."


async def test_info_of_a_component_and_of_a_pattern_match(caller: Caller) -> None:
    info = (await caller.rpc("components/info", {"component": "/greet"})).json()["result"]["info"]
    assert info["component"] == "/greet"
    greeting = info["input_schema"]["$defs"]["Greeting"]
    assert greeting["properties"]["punctuation"] == {"type": "string", "default": "!"}
    assert greeting["required"] == ["name"]
    matched = (await caller.rpc("components/info", {"component": "/core/openai/chat"})).json()
    assert matched["result"]["info"]["component"] == "/core/openai/chat"


async def test_execute_without_callbacks_answers_plain_json(caller: Caller) -> None:
    added = await caller.execute("/add", {"a": 2, "b": 3})
    assert (added.status, added.streamed) == (200, False)
    assert added.headers["content-type"] == "application/json"
    assert added.headers["stepflow-instance-id"] == "samples-1"
    assert added.response == {"jsonrpc": "2.0", "id": 1, "result": {"output": {"sum": 5}}}
    greeted = await caller.execute("greet", {"name": "Ada"})
    assert greeted.output == {"message": "Hello, Ada!"}


async def test_a_component_taking_a_context_answers_json_when_it_does_not_call_back(
    caller: Caller,
) -> None:
    execution = await caller.execute("/blobs/roundtrip", {"value": 7, "store": False})
    assert not execution.streamed
    assert execution.output == {"blob_id": None, "fetched": 7}


async def test_callbacks_travel_over_sse_and_are_answered_by_post(caller: Caller) -> None:
    value = {"rows": [1, 2, 3]}
    execution = await caller.execute(
        "/blobs/roundtrip",
        {"value": value},
        observability={"run_id": "run-9", "step_id": "s", "flow_id": "f"},
    )
    assert execution.streamed and execution.status == 200
    assert execution.headers["stepflow-instance-id"] == "samples-1"
    put, get = execution.callbacks
    blob_id = hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()
    assert put["method"] == "blobs/put" and put["jsonrpc"] == "2.0"
    assert put["params"] == {
        "data": value,
        "blob_type": "data",
        "observability": {
            "trace_id": None,
            "span_id": None,
            "run_id": "run-9",
            "flow_id": "f",
            "step_id": "s",
        },
    }
    assert get["method"] == "blobs/get" and get["params"]["blob_id"] == blob_id
    assert put["id"] != get["id"]
    assert execution.response["id"] == 1
    assert execution.output == {"blob_id": blob_id, "fetched": value}


async def test_a_plain_function_calls_back_through_sync_context(caller: Caller) -> None:
    execution = await caller.execute("/blobs/sync_put", {"value": "text"})
    assert execution.streamed
    assert [c["method"] for c in execution.callbacks] == ["blobs/put", "blobs/get"]
    assert execution.output["fetched"] == "text"


async def test_evaluate_flow_stores_the_flow_and_submits_a_run(caller: Caller) -> None:
    flow = {"name": "child", "steps": []}
    execution = await caller.execute("/flows/evaluate", {"flow": flow, "input": {"x": 1}})
    put, submit = execution.callbacks
    assert put["params"]["blob_type"] == "flow" and put["params"]["data"] == flow
    params = submit["params"]
    assert submit["method"] == "runs/submit"
    assert params["inputs"] == [{"x": 1}] and params["wait"] is True
    assert params["flowId"] in caller.blobs
    assert execution.output == {
        "flow_result": {"outcome": "success", "result": {"flow": "child", "input": {"x": 1}}}
    }


async def test_evaluate_flow_asks_runs_get_when_submit_returns_no_result(caller: Caller) -> None:
    execution = await caller.execute("/flows/evaluate", {"flow": {"name": "deferred"}, "input": 5})
    assert [c["method"] for c in execution.callbacks] == ["blobs/put", "runs/submit", "runs/get"]
    get = execution.callbacks[2]["params"]
    assert get["runId"] == "sub-run-0" and get["wait"] is True and get["includeResults"] is True
    assert execution.output["flow_result"]["result"] == {"flow": "deferred", "input": 5}


async def test_a_callback_answered_with_an_error_fails_the_component(caller: Caller) -> None:
    execution = await caller.execute("/blobs/fetch", {"blob_id": "0" * 64})
    assert execution.streamed and len(execution.callbacks) == 1
    error = execution.error
    assert error["code"] == -32003
    assert error["message"] == (
        f"CallbackError: blobs/get failed: blob {'0' * 64} not found (code -32004)"
    )


async def test_path_parameters_and_step_ids_reach_the_component(caller: Caller) -> None:
    execution = await caller.execute(
        "/core/openai/chat",
        {"q": 1},
        attempt=3,
        observability={"run_id": "r", "step_id": "s", "flow_id": "f"},
    )
    assert execution.output == {
        "component": "openai/chat",
        "path_params": {"component": "openai/chat"},
        "run_id": "r",
        "step_id": "s",
        "flow_id": "f",
        "attempt": 3,
        "input": {"q": 1},
    }


async def test_accept_without_event_stream_is_406(caller: Caller) -> None:
    response = await caller.post(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        {"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert response.status_code == 406
    assert response.json() == {
        "error": "Accept header must include application/json and text/event-stream"
    }


async def test_content_type_other_than_json_is_415(caller: Caller) -> None:
    response = await caller.post(b"{}", {**HEADERS, "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json() == {"error": "Content-Type must be application/json"}


async def test_bad_json_rpc_is_400(caller: Caller) -> None:
    not_json = await caller.post(b"{nope")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == -32700
    assert not_json.json()["id"] is None
    for body in (
        [1, 2],
        {"jsonrpc": "2.0"},
        {"jsonrpc": "1.0", "id": 1, "method": "x"},
        {"id": 1, "result": 1, "error": {"code": 1, "message": "m"}},
    ):
        response = await caller.post(body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == -32600, body
    no_component = await caller.rpc("components/execute", {"input": {}})
    assert no_component.status_code == 400
    assert no_component.json()["error"]["code"] == -32602


async def test_unknown_method_is_32601(caller: Caller) -> None:
    response = await caller.rpc("components/explode", {})
    assert response.status_code == 200
    assert response.json()["error"] == {
        "code": -32601,
        "message": "Method not found: components/explode",
    }


async def test_unknown_component_is_named(caller: Caller) -> None:
    execution = await caller.execute("/nope", {})
    assert execution.error["code"] == -32001
    assert "'/nope'" in execution.error["message"]
    info = await caller.rpc("components/info", {"component": "/nope"})
    assert info.json()["error"]["code"] == -32001


async def test_input_failing_the_schema_names_the_field(caller: Caller) -> None:
    wrong_type = (await caller.execute("/add", {"a": 1, "b": "two"})).error
    assert wrong_type["code"] == -32002
    assert "field 'b'" in wrong_type["message"]
    assert wrong_type["data"]["field"] == "b" and wrong_type["data"]["retryable"] is False
    missing = (await caller.execute("/greet", {"punctuation": "?"})).error
    assert missing["code"] == -32002 and missing["data"]["field"] == "name"


async def test_a_raising_component_reports_message_and_type(caller: Caller) -> None:
    error = (await caller.execute("/fail", {"message": "boom"})).error
    assert error == {
        "code": -32003,
        "message": "ValueError: boom",
        "data": {"type": "ValueError", "retryable": True},
    }


async def test_component_error_chooses_code_and_retryability(caller: Caller) -> None:
    error = (await caller.execute("/refuse", {"message": "no way", "retryable": False})).error
    assert error == {
        "code": -32050,
        "message": "no way",
        "data": {"type": "ComponentError", "retryable": False, "details": {"why": 42}},
    }


async def test_an_answer_to_no_waiting_callback_is_400(caller: Caller) -> None:
    response = await caller.post(
        {"jsonrpc": "2.0", "id": "ghost", "result": {}},
        {**HEADERS, "Stepflow-Instance-Id": "samples-1"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
