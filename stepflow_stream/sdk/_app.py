"""The ASGI app of a component server: Stepflow's HTTP protocol on ``POST /``, and
``GET /health``.

``POST /`` checks headers as stepflow-py 0.9.2 does: a Content-Type without
``application/json`` gets 415, an Accept without both ``application/json`` and
``text/event-stream`` gets 406 (case-insensitive). A body that is not a JSON-RPC message gets
400 and a JSON-RPC error (-32700 not JSON, -32600 not a message, -32602 params not an object).
A well-formed request always gets HTTP 200, its failures (unknown method, unknown component,
invalid input, a component that raised) as JSON-RPC errors; the one exception is
``components/execute`` at capacity: 503, ``Retry-After: 1``, JSON-RPC error -32000.

**Plain JSON or SSE.** stepflow-py 0.9.2 streams (``text/event-stream``) every execute of a
component whose signature takes a context, and answers everything else with plain JSON. Here
the answer starts lazily instead: the component runs, and if it returns without calling back,
the answer is plain JSON, whatever its signature; at its first callback the answer becomes an
SSE stream that carries that callback, any later ones, and last the execute's response. So a
caller must accept both for any execute, as the 0.9.2 protocol already requires.

Every ``POST /`` answer carries ``Stepflow-Instance-Id``; callback answers (JSON-RPC responses
posted by the caller) are routed by id to the waiting component and get 202, or 400 with
-32600 when no callback of that id is waiting here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.sdk._context import CallbackChannel, CallbackRouter, Context, SyncContext
from stepflow_stream.sdk._errors import ComponentError, RpcErrorCode
from stepflow_stream.sdk._protocol import (
    ProtocolError,
    RequestId,
    RpcNotification,
    RpcRequest,
    RpcResponse,
    encode,
    failure,
    parse_message,
    sse_frame,
    success,
)
from stepflow_stream.sdk._registry import ComponentRegistry, ComponentSpec, InvalidInput

logger = logging.getLogger("stepflow_stream.sdk")

PROTOCOL_VERSION = 1
INSTANCE_HEADER = "Stepflow-Instance-Id"
RETRY_AFTER_SECONDS = 1

_DONE: JSONObject = {}
"""Put on an execute's outbox when the component has finished (compared by identity)."""


class ComponentApp:
    """The state behind one ASGI app: components, in-flight executes, waiting callbacks."""

    def __init__(
        self, registry: ComponentRegistry, *, instance_id: str, max_concurrency: int
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.registry = registry
        self.instance_id = instance_id
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.callbacks = CallbackRouter()

    def starlette(self) -> Starlette:
        """The Starlette app serving this state."""
        return Starlette(
            routes=[
                Route("/", self.post, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "healthy", "instanceId": self.instance_id})

    async def post(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").lower()
        if "application/json" not in content_type:
            return self._json({"error": "Content-Type must be application/json"}, 415)
        accept = request.headers.get("accept", "").lower()
        if "application/json" not in accept or "text/event-stream" not in accept:
            return self._json(
                {"error": "Accept header must include application/json and text/event-stream"},
                406,
            )
        try:
            message = parse_message(await request.body())
            if isinstance(message, RpcResponse):
                return self._callback_answer(message)
            if isinstance(message, RpcNotification):
                return Response(status_code=202, headers=self._headers())
            if message.method == "components/execute":
                return await self._execute(message)
            return self._json(self._answer(message))
        except ProtocolError as exc:
            return self._json(failure(exc.id, exc.code, exc.message), 400)

    def _callback_answer(self, response: RpcResponse) -> Response:
        if not self.callbacks.answer(response):
            raise ProtocolError(
                RpcErrorCode.INVALID_REQUEST,
                f"no callback with id {response.id!r} is waiting on this instance",
                response.id,
            )
        return Response(status_code=202, headers=self._headers())

    def _answer(self, request: RpcRequest) -> JSONObject:
        """The response to any request but ``components/execute``."""
        if request.method == "initialize":
            return success(request.id, {"server_protocol_version": PROTOCOL_VERSION})
        if request.method == "components/list":
            infos = [_info(spec.name, spec) for spec in self.registry]
            return success(request.id, {"components": infos})
        if request.method in ("components/info", "components/infer_schema"):
            component = _component_param(request)
            found = self.registry.lookup(component)
            if found is None:
                return _not_found(request.id, component)
            spec = found[0]
            if request.method == "components/info":
                return success(request.id, {"info": _info(component, spec)})
            return success(request.id, {"output_schema": spec.output_schema})
        return failure(
            request.id, RpcErrorCode.METHOD_NOT_FOUND, f"Method not found: {request.method}"
        )

    async def _execute(self, request: RpcRequest) -> Response:
        params = request.params
        component = _component_param(request)
        attempt = params.get("attempt", 1)
        observability = params.get("observability") or {}
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise ProtocolError(
                RpcErrorCode.INVALID_PARAMS, "'attempt' must be an integer", request.id
            )
        if not isinstance(observability, dict):
            raise ProtocolError(
                RpcErrorCode.INVALID_PARAMS, "'observability' must be an object", request.id
            )
        if self.in_flight >= self.max_concurrency:
            return self._json(
                failure(
                    request.id,
                    RpcErrorCode.SERVER_BUSY,
                    f"server at capacity: {self.in_flight} of {self.max_concurrency} "
                    "executions in flight; retry later or elsewhere",
                    {"retryable": True, "maxConcurrency": self.max_concurrency},
                ),
                503,
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        found = self.registry.lookup(component)
        if found is None:
            return self._json(_not_found(request.id, component))
        spec, path_params = found
        try:
            input = spec.decode_input(params.get("input"))
        except InvalidInput as exc:
            return self._json(_invalid_input(request.id, component, exc))

        channel = CallbackChannel(self.callbacks)
        outbox = channel.outbox
        context = Context(
            component=component,
            attempt=attempt,
            observability=observability,
            path_params=path_params,
            channel=channel,
        )
        self.in_flight += 1
        execution = asyncio.create_task(self._run(request.id, spec, input, context, outbox))
        finish = _Once(lambda: self._finish(execution, channel))
        try:
            first = await outbox.get()
        except BaseException:
            finish()
            raise
        if first is _DONE:
            finish()
            return self._json(execution.result())
        return _EventStream(
            _frames(first, outbox, execution),
            on_close=finish,
            headers={**self._headers(), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _finish(self, execution: asyncio.Task[JSONObject], channel: CallbackChannel) -> None:
        self.in_flight -= 1
        channel.close()
        if not execution.done():
            execution.cancel()

    async def _run(
        self,
        id: RequestId,
        spec: ComponentSpec,
        input: Any,
        context: Context,
        outbox: asyncio.Queue[JSONObject],
    ) -> JSONObject:
        """Call the component; its success or error response (never raises but cancellation)."""
        try:
            if spec.is_async:
                output = await spec.function(**spec.arguments(input, context))
            else:
                blocking = SyncContext(context, asyncio.get_running_loop())
                output = await asyncio.to_thread(spec.function, **spec.arguments(input, blocking))
            try:
                return success(id, {"output": msgspec.to_builtins(output)})
            except TypeError as exc:
                raise ComponentError(f"the output is not JSON: {exc}", retryable=False) from exc
        except ComponentError as exc:
            data: JSONObject = {"type": type(exc).__name__, "retryable": exc.retryable}
            if exc.data is not None:
                data["details"] = exc.data
            return failure(id, exc.code, exc.message, data)
        except Exception as exc:
            logger.warning("component %s failed", context.component, exc_info=True)
            kind = type(exc).__name__
            return failure(
                id,
                RpcErrorCode.COMPONENT_FAILED,
                f"{kind}: {exc}" if str(exc) else kind,
                {"type": kind, "retryable": True},
            )
        finally:
            outbox.put_nowait(_DONE)

    def _headers(self) -> dict[str, str]:
        return {INSTANCE_HEADER: self.instance_id}

    def _json(
        self, body: JSON, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            encode(body),
            status_code=status,
            media_type="application/json",
            headers={**self._headers(), **(headers or {})},
        )


async def _frames(
    first: JSONObject, outbox: asyncio.Queue[JSONObject], execution: asyncio.Task[JSONObject]
) -> AsyncIterator[bytes]:
    """The SSE body: callbacks as the component makes them, then the execute's response."""
    message = first
    while message is not _DONE:
        yield sse_frame(message)
        message = await outbox.get()
    yield sse_frame(await execution)


class _EventStream(StreamingResponse):
    """A ``text/event-stream`` response that calls ``on_close`` however it ends, even when the
    caller goes away before the first frame (the body generator then never runs)."""

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        *,
        on_close: Callable[[], None],
        headers: dict[str, str],
    ) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _Once:
    """Calls a function the first time it is called, then never again."""

    def __init__(self, function: Callable[[], None]) -> None:
        self._function: Callable[[], None] | None = function

    def __call__(self) -> None:
        function, self._function = self._function, None
        if function is not None:
            function()


def _info(component: str, spec: ComponentSpec) -> JSONObject:
    return {
        "component": component,
        "description": spec.description,
        "input_schema": spec.input_schema,
        "output_schema": spec.output_schema,
    }


def _not_found(id: RequestId, component: str) -> JSONObject:
    return failure(
        id,
        RpcErrorCode.COMPONENT_NOT_FOUND,
        f"Component '{component}' not found",
        {"component": component, "retryable": False},
    )


def _component_param(request: RpcRequest) -> str:
    component = request.params.get("component")
    if not isinstance(component, str):
        raise ProtocolError(
            RpcErrorCode.INVALID_PARAMS,
            f"params of '{request.method}' need a 'component' string",
            request.id,
        )
    return component


def _invalid_input(id: RequestId, component: str, exc: InvalidInput) -> JSONObject:
    where = f" (field '{exc.field}')" if exc.field else ""
    return failure(
        id,
        RpcErrorCode.INVALID_INPUT,
        f"invalid input for component '{component}'{where}: {exc.reason}",
        {"component": component, "field": exc.field, "reason": exc.reason, "retryable": False},
    )
