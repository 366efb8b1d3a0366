"""Flows through a real EmbeddedRuntime whose ``/python/...`` steps run on component servers.

Callbacks here reach a real ExecutionContext: blobs land in the runtime's blob store and
``runs/submit`` starts real sub-runs with their own journals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from component_servers import ServerProcess, server_command

from stepflow_stream.config import parse_config_document
from stepflow_stream.core.events import FlowResult, RunCreated, StepFailed, StepStarted
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject, content_id
from stepflow_stream.errors import ErrorCode
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.plugins.stepflow_http import StepflowHttpPlugin
from stepflow_stream.runtime.embedded import EmbeddedRuntime

FAST_RETRY = {"transportMaxRetries": 3, "backoff": {"minDelayMs": 20, "maxDelayMs": 100}}


def runtime_for(
    plugins: dict[str, JSONObject],
    routes: dict[str, list[JSONObject]],
    retry: JSONObject = FAST_RETRY,
) -> EmbeddedRuntime:
    document = {
        "plugins": {"builtin": {"type": "builtin"}, **plugins},
        "routes": {**routes, "/builtin/{*component}": [{"plugin": "builtin"}]},
        "retry": retry,
    }
    return EmbeddedRuntime(parse_config_document(document), MemoryJournal(), MemoryBlobStore())


@pytest.fixture
async def runtime(server: ServerProcess) -> AsyncIterator[EmbeddedRuntime]:
    runtime = runtime_for(
        {"py": {"type": "stepflow", "url": server.url}},
        {"/python/{*component}": [{"plugin": "py"}]},
    )
    async with runtime:
        yield runtime


def one_step(component: str, input: JSON, **step: Any) -> JSONObject:
    return {
        "schema": "https://stepflow.org/schemas/v1/flow.json",
        "steps": [{"id": "call", "component": component, "input": input, **step}],
        "output": {"$step": "call"},
    }


async def run(runtime: EmbeddedRuntime, flow: JSONObject, input: JSON = None) -> FlowResult:
    _, result = await runtime.run(parse_flow(flow), input)
    return result


async def attempts(runtime: EmbeddedRuntime, run_id: str) -> int:
    return sum(1 for event in await runtime.journal.read(run_id) if type(event) is StepStarted)


ECHO_FLOW: JSONObject = {
    "steps": [{"id": "e", "component": "/python/echo", "input": {"got": {"$input": "$"}}}],
    "output": {"$step": "e"},
}


def test_the_registry_builds_a_stepflow_plugin_with_the_config_retry() -> None:
    runtime = runtime_for(
        {"py": {"type": "stepflow", "url": "http://127.0.0.1:1", "timeoutMs": 1500}},
        {"/python/{*component}": [{"plugin": "py"}]},
        retry={"transportMaxRetries": 7},
    )
    plugin = runtime.plugins["py"]
    assert isinstance(plugin, StepflowHttpPlugin)
    assert plugin.retry.transport_max_retries == 7
    assert plugin.settings.timeout_ms == 1500


async def test_a_one_step_flow_runs_on_the_server(runtime: EmbeddedRuntime) -> None:
    result = await run(runtime, one_step("/python/echo", {"$input": "$"}), {"a": 1})
    assert result == FlowResult(result={"a": 1})


async def test_blob_callbacks_reach_the_runtime_blob_store(runtime: EmbeddedRuntime) -> None:
    result = await run(runtime, one_step("/python/blobs", {"$input": "$"}), {"doc": "Zoë"})
    assert result.error is None
    assert result.result == {"blob_id": content_id({"doc": "Zoë"}), "data": {"doc": "Zoë"}}
    assert await runtime.blobs.get(result.result["blob_id"]) == {"doc": "Zoë"}


async def test_runs_submit_with_wait_runs_real_sub_runs(runtime: EmbeddedRuntime) -> None:
    input = {"flow": {"$literal": ECHO_FLOW}, "inputs": [1, "two", {"three": 3}]}
    run_id, result = await runtime.run(parse_flow(one_step("/python/subflow", input)), None)
    assert result.error is None, result
    assert result.result == {
        "status": "completed",
        "results": [
            {"outcome": "success", "result": {"got": 1}},
            {"outcome": "success", "result": {"got": "two"}},
            {"outcome": "success", "result": {"got": {"three": 3}}},
        ],
    }
    sub_runs = [
        summary.run_id for summary in await runtime.journal.list_runs(limit=100)
        if summary.run_id != run_id
    ]
    assert len(sub_runs) == 3
    for sub_run in sub_runs:
        created = (await runtime.journal.read(sub_run))[0]
        assert isinstance(created, RunCreated) and created.parent_run_id == run_id


async def test_a_failed_sub_run_comes_back_with_an_integer_code(
    runtime: EmbeddedRuntime,
) -> None:
    failing = one_step("/python/fail", {"message": {"$input": "why"}})
    input = {"flow": {"$literal": failing}, "inputs": [{"why": "no luck"}]}
    result = await run(runtime, one_step("/python/subflow", input))
    assert result.error is None, result
    assert result.result["status"] == "failed"
    [item] = result.result["results"]
    assert item["outcome"] == "failed"
    assert item["error"]["code"] == -32003
    assert item["error"]["data"]["code"] == ErrorCode.COMPONENT_FAILED
    assert "no luck" in item["error"]["message"]


async def test_runs_submit_without_wait_then_runs_get(runtime: EmbeddedRuntime) -> None:
    input = {"flow": {"$literal": ECHO_FLOW}, "inputs": [10, 20]}
    result = await run(runtime, one_step("/python/subflow_nowait", input))
    assert result.error is None, result
    assert result.result["status"] == "completed"
    assert [r["result"] for r in result.result["results"]] == [{"got": 10}, {"got": 20}]


async def test_a_bad_sub_flow_is_answered_with_a_callback_error(
    runtime: EmbeddedRuntime,
) -> None:
    input = {"flow": {"$literal": {"steps": "not a list"}}, "inputs": [1]}
    result = await run(runtime, one_step("/python/subflow", input))
    assert result.error is not None
    assert result.error.code == ErrorCode.COMPONENT_FAILED
    assert "callback runs/submit failed" in result.error.message


async def test_two_servers_behind_one_route_are_picked_by_conditions(
    server: ServerProcess, other_server: ServerProcess
) -> None:
    # One route key holds an ordered list of rules; a condition on the step input picks the
    # server, and the last rule (no conditions) takes everything else.
    runtime = runtime_for(
        {
            "first": {"type": "stepflow", "url": server.url},
            "second": {"type": "stepflow", "url": other_server.url},
        },
        {
            "/python/{*component}": [
                {"plugin": "first", "conditions": [{"path": "$.shard", "value": "a"}]},
                {"plugin": "second"},
            ]
        },
    )
    flow = {
        "steps": [
            {"id": "a", "component": "/python/instance", "input": {"shard": "a"}},
            {"id": "b", "component": "/python/instance", "input": {"shard": "b"}},
        ],
        "output": {"a": {"$step": "a", "path": "pid"}, "b": {"$step": "b", "path": "pid"}},
    }
    async with runtime:
        result = await run(runtime, flow)
    assert result.result == {"a": server.process.pid, "b": other_server.process.pid}


async def test_on_error_retry_retries_a_component_error(runtime: EmbeddedRuntime) -> None:
    flow = one_step("/python/flaky", {"succeed_on": 3}, onError={"action": "retry",
                                                                  "maxRetries": 3})
    run_id, result = await runtime.run(parse_flow(flow), None)
    assert result == FlowResult(result={"attempt": 3})
    assert await attempts(runtime, run_id) == 3


async def test_on_error_retry_does_not_retry_invalid_input(runtime: EmbeddedRuntime) -> None:
    flow = one_step("/python/strict", {"n": "x"}, onError={"action": "retry", "maxRetries": 3})
    run_id, result = await runtime.run(parse_flow(flow), None)
    assert result.error is not None and result.error.code == ErrorCode.INVALID_INPUT
    assert await attempts(runtime, run_id) == 1


async def test_a_component_error_fails_the_run_with_its_message(runtime: EmbeddedRuntime) -> None:
    result = await run(runtime, one_step("/python/fail", {"message": "out of coffee"}))
    assert result.error is not None
    assert result.error.code == ErrorCode.COMPONENT_FAILED
    assert "out of coffee" in result.error.message


async def test_a_crashed_command_server_is_restarted_for_the_step_retry(tmp_path: Path) -> None:
    command, *args = server_command()
    runtime = runtime_for(
        {"py": {"type": "stepflow", "command": command, "args": args}},
        {"/python/{*component}": [{"plugin": "py"}]},
        retry={"transportMaxRetries": 0},
    )
    flow = one_step("/python/crash", {"marker": str(tmp_path / "crashed")},
                    onError={"action": "retry", "maxRetries": 2})
    async with runtime:
        run_id, result = await runtime.run(parse_flow(flow), None)
        assert result.error is None, result
        assert result.result["survived"] is True
        assert await attempts(runtime, run_id) == 2
        failed = [e for e in await runtime.journal.read(run_id) if isinstance(e, StepFailed)]
        assert [e.error.code for e in failed] == [ErrorCode.UNREACHABLE]
