"""What a component reaches besides its input: ids of the step it runs for, and callbacks to
the caller (blobs and sub-flows) that travel as JSON-RPC requests inside the execute response.

A callback is a request frame put on the execute's outbox (the app streams it as an SSE
``data:`` frame); the caller answers it with a separate ``POST /`` whose JSON-RPC response the
app hands to :meth:`CallbackRouter.answer`, which wakes the waiting component. Params and
results have the shapes of stepflow-py 0.9.2 (``PutBlobParams``, ``GetBlobResult``,
``SubmitRunProtocolParams``, ``RunStatusProtocol`` ...).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.sdk._errors import CallbackError, RpcErrorCode
from stepflow_stream.sdk._protocol import RequestId, RpcResponse, request

T = TypeVar("T")

_OBSERVABILITY_KEYS = ("trace_id", "span_id", "run_id", "flow_id", "step_id")


class CallbackRouter:
    """Every callback waiting for an answer on this server, by request id: answers arrive on
    their own ``POST /``, not on the execute request that sent the callback."""

    def __init__(self) -> None:
        self._waiting: dict[RequestId, asyncio.Future[RpcResponse]] = {}

    def expect(self, id: RequestId, answer: asyncio.Future[RpcResponse]) -> None:
        self._waiting[id] = answer

    def forget(self, id: RequestId) -> None:
        self._waiting.pop(id, None)

    def answer(self, response: RpcResponse) -> bool:
        """Wake the component waiting for ``response``; False when none is (unknown id)."""
        waiting = self._waiting.pop(response.id, None)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(response)
        return True


class CallbackChannel:
    """The callbacks of one execute: requests go out on ``outbox`` (which the app streams),
    answers come back through the server's :class:`CallbackRouter`."""

    def __init__(self, router: CallbackRouter) -> None:
        self.outbox: asyncio.Queue[JSONObject] = asyncio.Queue()
        self._router = router
        self._waiting: dict[RequestId, asyncio.Future[RpcResponse]] = {}
        self._closed = False

    async def call(self, method: str, params: JSONObject) -> JSON:
        """Send ``method`` to the caller and return its answer's result; raises
        :class:`CallbackError` when the caller answers with an error."""
        if self._closed:
            raise CallbackError(method, RpcErrorCode.INTERNAL_ERROR, "the execution has ended")
        id = uuid.uuid4().hex
        answer: asyncio.Future[RpcResponse] = asyncio.get_running_loop().create_future()
        self._waiting[id] = answer
        self._router.expect(id, answer)
        try:
            await self.outbox.put(request(id, method, params))
            response = await answer
        finally:
            del self._waiting[id]
            self._router.forget(id)
        error = response.error
        if error is not None:
            raise CallbackError(method, error["code"], error["message"], error.get("data"))
        return response.result

    def close(self) -> None:
        """End the execution's callbacks: those still waiting are cancelled (the caller left,
        or the server shuts down), which also wakes a plain function blocked in its thread."""
        self._closed = True
        for answer in self._waiting.values():
            answer.cancel()


class StepInfo:
    """The ids of the step a component runs for (from ``components/execute``)."""

    def __init__(
        self,
        *,
        component: str,
        attempt: int,
        observability: Mapping[str, JSON],
        path_params: Mapping[str, str],
    ) -> None:
        self._component = component
        self._attempt = attempt
        self._observability = {key: observability.get(key) for key in _OBSERVABILITY_KEYS}
        self._path_params = dict(path_params)

    @property
    def component(self) -> str:
        """The component name the caller asked for (``/core/openai``, say)."""
        return self._component

    @property
    def path_params(self) -> dict[str, str]:
        """What the placeholders of a name like ``/core/{*component}`` captured."""
        return dict(self._path_params)

    @property
    def attempt(self) -> int:
        """The attempt number, 1 for the first try."""
        return self._attempt

    @property
    def run_id(self) -> str | None:
        """The run the step belongs to."""
        return self._text("run_id")

    @property
    def step_id(self) -> str | None:
        """The step being executed."""
        return self._text("step_id")

    @property
    def flow_id(self) -> str | None:
        """The blob id of the run's flow."""
        return self._text("flow_id")

    @property
    def observability(self) -> JSONObject:
        """The observability context sent back with every callback."""
        return dict(self._observability)

    def _text(self, key: str) -> str | None:
        value = self._observability.get(key)
        return value if isinstance(value, str) else None


class Context(StepInfo):
    """Given to an ``async`` component that declares it: ids of its step, and callbacks."""

    def __init__(
        self,
        *,
        component: str,
        attempt: int,
        observability: Mapping[str, JSON],
        path_params: Mapping[str, str],
        channel: CallbackChannel,
    ) -> None:
        super().__init__(
            component=component,
            attempt=attempt,
            observability=observability,
            path_params=path_params,
        )
        self._channel = channel

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        """Store ``data`` with the caller (``blobs/put``) and return its content id.
        ``blob_type`` is ``"data"`` or ``"flow"``."""
        result = await self._call("blobs/put", {"data": data, "blob_type": blob_type})
        return str(_field(result, "blob_id", "blobs/put"))

    async def get_blob(self, blob_id: str) -> JSON:
        """The value the caller stores under ``blob_id`` (``blobs/get``)."""
        result = await self._call("blobs/get", {"blob_id": blob_id})
        return _field(result, "data", "blobs/get")

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> JSONObject:
        """Run ``flow`` on ``input`` as a sub-run and return its FlowResult:
        ``{"outcome": "success", "result": ...}`` or ``{"outcome": "failed", "error": ...}``.

        Like stepflow-py, the flow is stored first (``blobs/put`` with ``blob_type: flow``)."""
        flow_id = await self.put_blob(flow, "flow")
        return await self.evaluate_flow_by_id(flow_id, input)

    async def evaluate_flow_by_id(self, flow_id: str, input: JSON) -> JSONObject:
        """Run the stored flow ``flow_id`` on ``input``; returns its FlowResult.

        Sends ``runs/submit`` with ``wait: true``; if the answer carries no result yet, asks
        ``runs/get`` with ``wait: true`` for it."""
        status = await self._call(
            "runs/submit",
            {
                "flowId": flow_id,
                "inputs": [input],
                "wait": True,
                "maxConcurrency": None,
                "overrides": None,
            },
        )
        found = _first_flow_result(status)
        if found is None:
            run_id = _field(status, "runId", "runs/submit")
            status = await self._call(
                "runs/get",
                {
                    "runId": run_id,
                    "wait": True,
                    "includeResults": True,
                    "resultOrder": "by_index",
                },
            )
            found = _first_flow_result(status)
        if found is None:
            raise CallbackError(
                "runs/get", RpcErrorCode.INVALID_REQUEST, "the finished run carries no result"
            )
        return found

    async def _call(self, method: str, params: JSONObject) -> JSON:
        params["observability"] = self.observability
        return await self._channel.call(method, params)


class SyncContext(StepInfo):
    """Given to a plain (``def``) component that declares it, which runs in a worker thread:
    the methods of :class:`Context`, blocking until the caller answers."""

    def __init__(self, context: Context, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            component=context.component,
            attempt=context.attempt,
            observability=context.observability,
            path_params=context.path_params,
        )
        self._context = context
        self._loop = loop
        # Made on the loop's thread, where blocking on the loop would deadlock.
        self._loop_thread = threading.get_ident()

    def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        """See :meth:`Context.put_blob`."""
        return self._wait(self._context.put_blob(data, blob_type))

    def get_blob(self, blob_id: str) -> JSON:
        """See :meth:`Context.get_blob`."""
        return self._wait(self._context.get_blob(blob_id))

    def evaluate_flow(self, flow: JSONObject, input: JSON) -> JSONObject:
        """See :meth:`Context.evaluate_flow`."""
        return self._wait(self._context.evaluate_flow(flow, input))

    def evaluate_flow_by_id(self, flow_id: str, input: JSON) -> JSONObject:
        """See :meth:`Context.evaluate_flow_by_id`."""
        return self._wait(self._context.evaluate_flow_by_id(flow_id, input))

    def _wait(self, call: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            call.close()
            raise RuntimeError("SyncContext blocks; call it from the component's worker thread")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()


def _field(result: JSON, key: str, method: str) -> JSON:
    if not isinstance(result, dict) or key not in result:
        raise CallbackError(method, RpcErrorCode.INVALID_REQUEST, f"the answer has no '{key}'")
    return result[key]


def _first_flow_result(status: JSON) -> JSONObject | None:
    """The FlowResult of item 0 of a RunStatusProtocol, when it has one."""
    results = status.get("results") if isinstance(status, dict) else None
    if not isinstance(results, list):
        return None
    for item in results:
        if isinstance(item, dict) and item.get("itemIndex", 0) == 0:
            result = item.get("result")
            return result if isinstance(result, dict) else None
    return None
