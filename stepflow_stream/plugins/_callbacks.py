"""Answering a component's callbacks (blobs and sub-runs) from the step's ExecutionContext.

A component that calls back gets, through its server, JSON-RPC requests to us: ``blobs/put``,
``blobs/get``, ``runs/submit`` and ``runs/get``. One :class:`CallbackResponder` serves the
callbacks of one ``components/execute`` call, so the runs a component submits are visible to
its own ``runs/get`` and to nothing else. Result shapes are those stepflow-py 0.9.2 decodes
(``PutBlobResult``, ``GetBlobResult``, ``RunStatusProtocol``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins import _jsonrpc
from stepflow_stream.plugins.base import ExecutionContext


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _invalid(message: str) -> ComponentError:
    return ComponentError(ErrorCode.INVALID_INPUT, message, retryable=False)


def _field(params: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(params, dict) or not isinstance(params.get(name), kind):
        raise _invalid(f"callback params need '{name}'")
    return params[name]


class _SubmittedRun:
    """The items of one ``runs/submit``, running or finished."""

    def __init__(self, run_id: str, flow_id: str, count: int) -> None:
        self.run_id = run_id
        self.flow_id = flow_id
        self.created_at = _now()
        self.completed_at: str | None = None
        self.results: list[FlowResult | None] = [None] * count
        self.done: asyncio.Task[None] | None = None

    def status(self, include_results: bool) -> JSONObject:
        finished = [result for result in self.results if result is not None]
        failed = sum(1 for result in finished if result.error is not None)
        running = len(self.results) - len(finished)
        status: JSONObject = {
            "runId": self.run_id,
            "flowId": self.flow_id,
            "status": "running" if running else ("failed" if failed else "completed"),
            "items": {
                "total": len(self.results),
                "completed": len(finished) - failed,
                "running": running,
                "failed": failed,
                "cancelled": 0,
            },
            "createdAt": self.created_at,
        }
        if self.completed_at is not None:
            status["completedAt"] = self.completed_at
        if include_results:
            status["results"] = [self._item(index, item) for index, item in enumerate(self.results)]
        return status

    def _item(self, index: int, result: FlowResult | None) -> JSONObject:
        if result is None:
            return {"itemIndex": index, "status": "running"}
        return {
            "itemIndex": index,
            "status": "failed" if result.error is not None else "completed",
            "result": _jsonrpc.wire_flow_result(result),
            "completedAt": self.completed_at,
        }


class CallbackResponder:
    """Serves the callbacks of one component call from its ExecutionContext."""

    def __init__(self, context: ExecutionContext) -> None:
        self._context = context
        self._runs: dict[str, _SubmittedRun] = {}
        self._run_numbers = itertools.count(1)
        self._methods: dict[str, Callable[[Any], Awaitable[JSON]]] = {
            "blobs/put": self._put_blob,
            "blobs/get": self._get_blob,
            "runs/submit": self._submit_run,
            "runs/get": self._get_run,
        }

    async def answer(self, request_id: int | str, method: str, params: Any) -> bytes:
        """The JSON-RPC response (body bytes) to one callback request; never raises."""
        handler = self._methods.get(method)
        if handler is None:
            return _jsonrpc.failure(
                request_id, _jsonrpc.METHOD_NOT_FOUND, f"unknown callback method '{method}'"
            )
        try:
            return _jsonrpc.success(request_id, await handler(params))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure becomes the callback's error answer
            return _jsonrpc.failure(request_id, *_jsonrpc.error_for(exc))

    def cancel(self) -> None:
        """Stop sub-runs still being awaited for ``runs/submit`` without ``wait``."""
        for run in self._runs.values():
            if run.done is not None:
                run.done.cancel()

    async def _put_blob(self, params: Any) -> JSON:
        if not isinstance(params, dict) or "data" not in params:
            raise _invalid("callback params need 'data'")
        blob_type = params.get("blob_type") or "data"
        return {"blob_id": await self._context.put_blob(params["data"], blob_type)}

    async def _get_blob(self, params: Any) -> JSON:
        blob_id = _field(params, "blob_id", str)
        # The blob store keeps no type; "data" is what a component reading a value expects.
        return {"data": await self._context.get_blob(blob_id), "blob_type": "data"}

    async def _submit_run(self, params: Any) -> JSON:
        flow_id = _field(params, "flowId", str)
        inputs = _field(params, "inputs", list)
        limit = params.get("maxConcurrency")
        flow = await self._context.get_blob(flow_id)
        if not isinstance(flow, dict):
            raise _invalid(f"blob {flow_id} is not a flow")
        run_id = f"{self._context.task_id}/submit-{next(self._run_numbers)}"
        run = self._runs[run_id] = _SubmittedRun(run_id, flow_id, len(inputs))
        run.done = asyncio.ensure_future(self._evaluate(run, flow, inputs, limit))
        # A failure nobody asks about (no wait, no runs/get) must not be logged as lost.
        run.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        if params.get("wait"):
            await asyncio.shield(run.done)
            return run.status(include_results=True)
        return run.status(include_results=False)

    async def _evaluate(
        self, run: _SubmittedRun, flow: JSONObject, inputs: list[JSON], limit: Any
    ) -> None:
        slots = asyncio.Semaphore(limit if isinstance(limit, int) and limit > 0 else len(inputs))

        async def item(index: int, input: JSON) -> None:
            async with slots:
                run.results[index], _ = await self._context.evaluate_flow(flow, input)

        await asyncio.gather(*(item(index, input) for index, input in enumerate(inputs)))
        run.completed_at = _now()

    async def _get_run(self, params: Any) -> JSON:
        run_id = _field(params, "runId", str)
        run = self._runs.get(run_id)
        if run is None:
            raise _invalid(f"no run '{run_id}' was submitted by this component call")
        if params.get("wait") and run.done is not None:
            await asyncio.shield(run.done)
        return run.status(include_results=bool(params.get("includeResults")))
