"""JSON-RPC 2.0 messages as Stepflow's HTTP protocol carries them: parsing one ``POST /`` body,
building responses, and framing a message as one server-sent event.

A body holds one message (no batches): a request (``id`` and ``method``), a notification
(``method``, no ``id``), or a response to one of our callbacks (``id`` and ``result`` or
``error``). ``jsonrpc`` may be omitted; any value other than ``"2.0"`` is rejected, as in
stepflow-py 0.9.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import msgspec

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.sdk._errors import RpcErrorCode

RequestId: TypeAlias = str | int


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A request the caller sends us: ``initialize``, ``components/*``."""

    id: RequestId
    method: str
    params: JSONObject


@dataclass(frozen=True, slots=True)
class RpcNotification:
    """A message without an id (``initialized``); it gets 202 and no answer."""

    method: str
    params: JSONObject


@dataclass(frozen=True, slots=True)
class RpcResponse:
    """The caller's answer to one of our callbacks: ``error`` is None on success."""

    id: RequestId
    result: JSON
    error: JSONObject | None


RpcMessage: TypeAlias = RpcRequest | RpcNotification | RpcResponse


class ProtocolError(Exception):
    """A body that is not an acceptable JSON-RPC message; answered with HTTP 400."""

    def __init__(self, code: RpcErrorCode, message: str, id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.name}, {self.message!r})"


def parse_message(body: bytes) -> RpcMessage:
    """The message in a ``POST /`` body; raises :class:`ProtocolError`."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(RpcErrorCode.PARSE_ERROR, f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(
            RpcErrorCode.INVALID_REQUEST,
            "a message must be a JSON object (batches are not supported)",
        )
    id = value.get("id")
    if id is not None and (isinstance(id, bool) or not isinstance(id, str | int)):
        raise ProtocolError(RpcErrorCode.INVALID_REQUEST, "'id' must be a string or an integer")
    if value.get("jsonrpc", "2.0") != "2.0":
        raise ProtocolError(RpcErrorCode.INVALID_REQUEST, "'jsonrpc' must be \"2.0\"", id)

    if "method" in value:
        method = value["method"]
        if not isinstance(method, str):
            raise ProtocolError(RpcErrorCode.INVALID_REQUEST, "'method' must be a string", id)
        params = value.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ProtocolError(
                RpcErrorCode.INVALID_PARAMS, f"params of '{method}' must be an object", id
            )
        if id is None:
            return RpcNotification(method, params)
        return RpcRequest(id, method, params)

    if id is None:
        raise ProtocolError(
            RpcErrorCode.INVALID_REQUEST,
            "a message needs a 'method' (request) or an 'id' (response)",
        )
    has_result, error = "result" in value, value.get("error")
    if has_result == (error is not None):
        raise ProtocolError(
            RpcErrorCode.INVALID_REQUEST, "a response needs exactly one of 'result' and 'error'", id
        )
    if error is not None and not (
        isinstance(error, dict)
        and isinstance(error.get("code"), int)
        and isinstance(error.get("message"), str)
    ):
        raise ProtocolError(
            RpcErrorCode.INVALID_REQUEST,
            "'error' must be an object with a 'code' and a 'message'",
            id,
        )
    return RpcResponse(id, value.get("result"), error)


def success(id: RequestId, result: JSON) -> JSONObject:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": id, "result": result}


def failure(id: RequestId | None, code: int, message: str, data: JSON = None) -> JSONObject:
    """A JSON-RPC error response; ``id`` is null when the request's id could not be read."""
    error: JSONObject = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": error}


def request(id: RequestId, method: str, params: JSONObject) -> JSONObject:
    """A JSON-RPC request (our callbacks to the caller)."""
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def encode(message: JSON) -> bytes:
    """Compact JSON bytes of a message."""
    return msgspec.json.encode(message)


def sse_frame(message: JSON) -> bytes:
    """One server-sent event carrying one message: ``data: <json>\\n\\n``, as stepflow-py sends."""
    return b"data: " + encode(message) + b"\n\n"
