"""``/eval``, ``/map`` and ``/iterate``: components that run flows as sub-runs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins.base import ExecutionContext
from stepflow_stream.plugins.builtin._component import (
    ANY,
    STRING,
    Settings,
    component,
    object_schema,
)
from stepflow_stream.plugins.builtin._inputs import Input, invalid, json_type

_FLOW: JSONObject = {
    "description": "an inline flow, or the blob id of one",
    "type": ["object", "string"],
}
_FLOW_RESULT: JSONObject = {
    "type": "object",
    "properties": {"outcome": {"enum": ["success", "failed"]}, "result": {}, "error": {}},
    "required": ["outcome"],
}

# Codes of sub-run failures that would fail again the same way; /iterate marks them non-retryable.
_DETERMINISTIC_CODES = frozenset(
    {
        ErrorCode.INVALID_INPUT,
        ErrorCode.VALIDATION_FAILED,
        ErrorCode.EXPRESSION_FAILED,
        ErrorCode.CANCELLED,
    }
)


async def _resolve_flow(
    component: str, flow: JSONObject | str, context: ExecutionContext
) -> JSONObject:
    if isinstance(flow, dict):
        return flow
    stored = await context.get_blob(flow)
    if not isinstance(stored, dict):
        raise invalid(component, f"blob {flow} holds {json_type(stored)}, not a flow")
    return stored


@component(
    "/eval",
    "Run a flow (inline, or stored as a blob) as a sub-run and return its FlowResult.",
    object_schema({"flow": {"type": "object"}, "flow_id": STRING, "input": ANY}, ["input"]),
    object_schema({"result": _FLOW_RESULT, "run_id": STRING}, ["result", "run_id"]),
)
async def eval_flow(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/eval", input)
    # Stepflow sends both when it knows the flow's id; the inline flow wins.
    flow: JSONObject | str
    if args.fields.get("flow") is not None:
        flow = args.fields["flow"]
        if not isinstance(flow, dict):
            raise args.wrong("flow", "an object (use 'flow_id' for a blob id)")
    elif args.fields.get("flow_id") is not None:
        flow = args.string("flow_id", "the blob id of the flow")
    else:
        raise invalid("/eval", "missing field 'flow' (an inline flow) or 'flow_id' (a blob id)")
    value = args.value("input", "the sub-flow's input")
    result, run_id = await context.evaluate_flow(await _resolve_flow("/eval", flow, context), value)
    return {"result": result.to_json(), "run_id": run_id}


@component(
    "/map",
    "Run a flow once per item, up to max_concurrency at a time; results are in item order.",
    object_schema(
        {
            "workflow": _FLOW,
            "items": {"type": "array"},
            "max_concurrency": {"type": "integer", "minimum": 1},
        },
        ["workflow", "items"],
    ),
    object_schema(
        {
            "results": {"type": "array", "items": _FLOW_RESULT},
            "successful": {"type": "integer"},
            "failed": {"type": "integer"},
        },
        ["results", "successful", "failed"],
    ),
)
async def map_flow(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/map", input)
    workflow = args.flow("workflow", "the flow to run on each item")
    items = args.array("items", "the inputs, one sub-run each")
    limit = args.optional_positive_int("max_concurrency") or len(items)
    flow = await _resolve_flow("/map", workflow, context)
    results: list[FlowResult] = [FlowResult()] * len(items)
    # One shared iterator: each worker takes the next index as it frees up, so sub-runs start
    # in item order and at most ``limit`` are in flight.
    indices = iter(range(len(items)))

    async def worker() -> None:
        for index in indices:
            results[index], _ = await context.evaluate_flow(flow, items[index])

    await _all([worker() for _ in range(min(limit, len(items)))])
    successful = sum(1 for result in results if result.ok)
    return {
        "results": [result.to_json() for result in results],
        "successful": successful,
        "failed": len(results) - successful,
    }


async def _all(workers: list[Coroutine[Any, Any, None]]) -> None:
    """Await every worker; if one raises, cancel the others before re-raising."""
    tasks = [asyncio.ensure_future(worker) for worker in workers]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@component(
    "/iterate",
    "Run a flow repeatedly: each pass returns {next} to go on or {result} to stop.",
    object_schema(
        {
            "flow": _FLOW,
            "initial_input": ANY,
            "max_iterations": {"type": "integer", "minimum": 1, "default": 1000},
        },
        ["flow", "initial_input"],
    ),
    object_schema(
        {"result": ANY, "iterations": {"type": "integer"}, "terminated": {"type": "boolean"}},
        ["result", "iterations", "terminated"],
    ),
)
async def iterate_flow(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/iterate", input)
    flow_ref = args.flow("flow", "the flow to run on each pass")
    current = args.value("initial_input", "the first pass's input")
    max_iterations = args.optional_positive_int("max_iterations") or 1000
    flow = await _resolve_flow("/iterate", flow_ref, context)
    for iteration in range(1, max_iterations + 1):
        result, run_id = await context.evaluate_flow(flow, current)
        if result.error is not None:
            error = result.error
            raise ComponentError(
                error.code,
                f"/iterate: pass {iteration} failed: {error.message}",
                retryable=error.code not in _DETERMINISTIC_CODES,
                data={"iteration": iteration, "run_id": run_id, "error": error.to_json()},
            )
        output = result.result
        if isinstance(output, dict) and "result" in output:
            return {"result": output["result"], "iterations": iteration, "terminated": False}
        if not isinstance(output, dict) or "next" not in output:
            raise ComponentError(
                ErrorCode.COMPONENT_FAILED,
                f"/iterate: pass {iteration} returned {json_type(output)} without 'next' or "
                "'result'; each pass must return {next: <input>} or {result: <value>}",
                retryable=False,
                data={"iteration": iteration, "run_id": run_id},
            )
        current = output["next"]
    return {"result": current, "iterations": max_iterations, "terminated": True}
