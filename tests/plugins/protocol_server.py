"""A small Stepflow component server for the HTTP plugin's tests, run as its own process.

    python protocol_server.py [--port N] [--capacity N]

Binds 127.0.0.1 (port 0 means any free port), prints ``{"port": N}`` on stdout, and serves the
Stepflow HTTP protocol as stepflow-py 0.9.2 does: ``POST /`` JSON-RPC (415 without
``Content-Type: application/json``, 406 unless ``Accept`` lists both JSON and event streams),
``GET /health``. Components that call back answer with ``text/event-stream`` and a
``Stepflow-Instance-Id`` header; the caller's answers come as separate POSTs. The answers are
decoded with the same msgspec types as 0.9.2 (``PutBlobResult``, ``GetBlobResult``,
``RunStatusProtocol``), so a wrongly shaped answer fails the component. With ``--capacity N``
an execute beyond N at once gets HTTP 503.

Components: ``/echo`` (input back), ``/context`` (attempt and observability), ``/instance``
(this server's id and pid), ``/fail`` (raises ``input.message``), ``/strict`` (needs an integer
``n``: else invalid params), ``/flaky`` (fails until ``attempt >= input.succeed_on``), ``/slow``
(sleeps ``input.seconds``), ``/crash`` (``os._exit`` mid-request; with ``input.marker`` only
while that file does not exist, creating it), ``/stats`` (calls in flight and 503 answers so
far; never refused). They call back, over SSE: ``/blobs`` (put then get ``input``),
``/missing_blob`` (gets an unknown blob, returns the error), ``/subflow`` (puts ``input.flow``,
submits it on ``input.inputs`` with ``wait``), ``/subflow_nowait`` (submits without wait, then
asks ``runs/get``), ``/crash_mid_stream`` (exits after its first callback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# The result types of 0.9.2's generated_protocol.py that its context decodes callback answers
# with (fields trimmed to what decoding checks).


class PutBlobResult(msgspec.Struct, kw_only=True):
    blob_id: str


class GetBlobResult(msgspec.Struct, kw_only=True):
    data: Any
    blob_type: Literal["flow", "data"]


class FlowError(msgspec.Struct, kw_only=True):
    code: int
    message: str
    data: Any | None = None


class FlowResultSuccess(msgspec.Struct, kw_only=True, tag_field="outcome", tag="success"):
    outcome: ClassVar[str]
    result: Any


class FlowResultFailed(msgspec.Struct, kw_only=True, tag_field="outcome", tag="failed"):
    outcome: ClassVar[str]
    error: FlowError


class ItemStatistics(msgspec.Struct, kw_only=True):
    total: int
    completed: int
    running: int
    failed: int
    cancelled: int


class ItemResult(msgspec.Struct, kw_only=True):
    itemIndex: int
    status: Literal["running", "completed", "failed", "cancelled", "paused"]
    result: FlowResultSuccess | FlowResultFailed | None = None
    completedAt: str | None = None


class RunStatusProtocol(msgspec.Struct, kw_only=True):
    runId: str
    flowId: str
    status: str
    items: ItemStatistics
    createdAt: str
    flowName: str | None = None
    completedAt: str | None = None
    results: list[ItemResult] | None = None


class Failure(Exception):
    """A component error with a JSON-RPC code (-32003 is 0.9.2's execution error)."""

    def __init__(self, message: str, code: int = -32003, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


INSTANCE_ID = uuid.uuid4().hex[:16]
SSE_HEADERS = {"Stepflow-Instance-Id": INSTANCE_ID}


class Server:
    """The process's state: pending callbacks, calls in flight, the capacity."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.active = 0
        self.rejected = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}


class Callbacks:
    """What a streaming component uses to call back; requests go out as SSE frames."""

    def __init__(self, server: Server, params: dict[str, Any]) -> None:
        self.server = server
        self.params = params
        self.outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def call(self, method: str, params: dict[str, Any], result_type: type[Any]) -> Any:
        request_id = uuid.uuid4().hex
        future = self.server.pending[request_id] = asyncio.get_running_loop().create_future()
        await self.outgoing.put(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )
        answer = await future
        if "error" in answer:
            raise Failure(f"callback {method} failed: {answer['error']['message']}")
        return msgspec.convert(answer["result"], result_type)

    async def put_blob(self, data: Any, blob_type: str = "data") -> str:
        put = await self.call("blobs/put", {"data": data, "blob_type": blob_type}, PutBlobResult)
        return str(put.blob_id)

    async def get_blob(self, blob_id: str) -> Any:
        return (await self.call("blobs/get", {"blob_id": blob_id}, GetBlobResult)).data


Plain = Callable[[Any, dict[str, Any]], Awaitable[Any]]
Streaming = Callable[[Any, Callbacks], Awaitable[Any]]


async def echo(input: Any, params: dict[str, Any]) -> Any:
    return input


async def context(input: Any, params: dict[str, Any]) -> Any:
    return {"attempt": params.get("attempt"), "observability": params.get("observability")}


async def instance(input: Any, params: dict[str, Any]) -> Any:
    return {"instance": INSTANCE_ID, "pid": os.getpid(), "input": input}


async def fail(input: Any, params: dict[str, Any]) -> Any:
    raise Failure(f"Component execution failed: {input.get('message', 'boom')}")


async def strict(input: Any, params: dict[str, Any]) -> Any:
    if not isinstance(input, dict) or not isinstance(input.get("n"), int):
        raise Failure("Invalid params: 'n' must be an integer", code=-32602, data={"input": input})
    return {"n": input["n"] + 1}


async def flaky(input: Any, params: dict[str, Any]) -> Any:
    if params["attempt"] < input["succeed_on"]:
        raise Failure(f"Component execution failed: attempt {params['attempt']} is too early")
    return {"attempt": params["attempt"]}


async def slow(input: Any, params: dict[str, Any]) -> Any:
    await asyncio.sleep(input["seconds"])
    return {"slept": input["seconds"]}


async def crash(input: Any, params: dict[str, Any]) -> Any:
    marker = input.get("marker") if isinstance(input, dict) else None
    if marker is None or not Path(marker).exists():
        if marker is not None:
            Path(marker).touch()
        os._exit(17)
    return {"survived": True, "pid": os.getpid()}


async def blobs(input: Any, callbacks: Callbacks) -> Any:
    blob_id = await callbacks.put_blob(input)
    return {"blob_id": blob_id, "data": await callbacks.get_blob(blob_id)}


async def missing_blob(input: Any, callbacks: Callbacks) -> Any:
    try:
        await callbacks.get_blob("0" * 64)
    except Failure as exc:
        return {"error": str(exc)}
    raise Failure("a blob that was never stored was found")


async def crash_mid_stream(input: Any, callbacks: Callbacks) -> Any:
    await callbacks.put_blob(input)
    os._exit(17)


def _results(status: RunStatusProtocol) -> list[Any]:
    assert status.results is not None
    return [msgspec.to_builtins(item.result) for item in status.results]


async def subflow(input: Any, callbacks: Callbacks) -> Any:
    flow_id = await callbacks.put_blob(input["flow"], "flow")
    params = {"flowId": flow_id, "inputs": input["inputs"], "wait": True}
    status = await callbacks.call("runs/submit", params, RunStatusProtocol)
    return {"status": status.status, "results": _results(status)}


async def subflow_nowait(input: Any, callbacks: Callbacks) -> Any:
    flow_id = await callbacks.put_blob(input["flow"], "flow")
    params = {"flowId": flow_id, "inputs": input["inputs"], "wait": False}
    submitted = await callbacks.call("runs/submit", params, RunStatusProtocol)
    query = {"runId": submitted.runId, "wait": True, "includeResults": True}
    status = await callbacks.call("runs/get", query, RunStatusProtocol)
    return {"submitted": submitted.status, "status": status.status, "results": _results(status)}


PLAIN: dict[str, Plain] = {
    "/echo": echo,
    "/context": context,
    "/instance": instance,
    "/fail": fail,
    "/strict": strict,
    "/flaky": flaky,
    "/slow": slow,
    "/crash": crash,
}
STREAMING: dict[str, Streaming] = {
    "/blobs": blobs,
    "/missing_blob": missing_blob,
    "/crash_mid_stream": crash_mid_stream,
    "/subflow": subflow,
    "/subflow_nowait": subflow_nowait,
}


def success(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id,
            "error": {"code": code, "message": message, "data": data}}


def frame(message: dict[str, Any]) -> str:
    return f"data: {json.dumps(message)}\n\n"


def create_app(server: Server) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "healthy", "instanceId": INSTANCE_ID})

    async def rpc(request: Request) -> Response:
        if "application/json" not in request.headers.get("content-type", ""):
            return JSONResponse({"error": "Content-Type must be application/json"}, 415)
        accept = request.headers.get("accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            return JSONResponse({"error": "Accept must list both content types"}, 406)
        message = json.loads(await request.body())
        if "method" not in message:  # the caller's answer to one of our callbacks
            future = server.pending.pop(message.get("id"), None)
            if future is None:
                return JSONResponse(error(None, -32600, "no such callback"), 400)
            future.set_result(message)
            return JSONResponse("", 202)
        if "id" not in message:  # a notification (initialized)
            return JSONResponse("", 202)
        request_id, method, params = message["id"], message["method"], message.get("params")
        if method == "initialize":
            return JSONResponse(success(request_id, {"server_protocol_version": 1}))
        if method == "components/list":
            listed = [{"component": name, "description": f"test component {name}",
                       "input_schema": {"type": "object"}} for name in [*PLAIN, *STREAMING]]
            return JSONResponse(success(request_id, {"components": listed}))
        if method == "components/info":
            name = params["component"]
            if name not in PLAIN and name not in STREAMING:
                return JSONResponse(error(request_id, -32001, f"Component '{name}' not found"), 400)
            info = {"component": name, "description": f"test component {name}"}
            return JSONResponse(success(request_id, {"info": info}))
        if method != "components/execute":
            return JSONResponse(error(request_id, -32601, f"Method not found: {method}"))
        if params["component"] == "/stats":  # never at capacity, so tests can watch the load
            stats = {"rejected": server.rejected, "active": server.active}
            return JSONResponse(success(request_id, {"output": stats}))
        if server.capacity is not None and server.active >= server.capacity:
            server.rejected += 1
            return JSONResponse({"error": "at capacity"}, 503)
        if params["component"] in STREAMING:
            return StreamingResponse(
                stream(request_id, params), media_type="text/event-stream", headers=SSE_HEADERS
            )
        component = PLAIN.get(params["component"])
        if component is None:
            missing = f"Component '{params['component']}' not found"
            return JSONResponse(error(request_id, -32001, missing), 400)
        server.active += 1
        try:
            output = await component(params["input"], params)
        except Failure as exc:
            return JSONResponse(error(request_id, exc.code, str(exc), exc.data))
        finally:
            server.active -= 1
        return JSONResponse(success(request_id, {"output": output}))

    async def stream(request_id: Any, params: dict[str, Any]) -> AsyncIterator[str]:
        server.active += 1
        try:
            callbacks = Callbacks(server, params)
            component = STREAMING[params["component"]]

            async def run() -> dict[str, Any]:
                try:
                    output = await component(params["input"], callbacks)
                    return success(request_id, {"output": output})
                except Failure as exc:
                    return error(request_id, exc.code, str(exc), exc.data)
                except Exception as exc:
                    return error(request_id, -32003, f"{type(exc).__name__}: {exc}")
                finally:
                    await callbacks.outgoing.put(None)

            task = asyncio.create_task(run())
            while (outgoing := await callbacks.outgoing.get()) is not None:
                yield frame(outgoing)
            yield frame(await task)
        finally:
            server.active -= 1

    return Starlette(routes=[Route("/", rpc, methods=["POST"]), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=None)
    options = parser.parse_args()
    # proto=IPPROTO_TCP, or asyncio does not set TCP_NODELAY on accepted connections and every
    # answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", options.port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    app = create_app(Server(options.capacity))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
