"""JSON-RPC 2.0 messages of the Stepflow protocol, and how their error codes map to ours.

Messages are decoded with msgspec into one envelope type whose fields tell a request
(``method`` and ``id``), a notification (``method``, no ``id``) and a response (``result`` or
``error``) apart. Numeric codes are those of the reference Python SDK (stepflow-py 0.9.2).
"""

from __future__ import annotations

from typing import Any

import msgspec

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
GENERIC_ERROR = -32000
COMPONENT_ERROR = -32001
VALIDATION_ERROR = -32002
EXECUTION_ERROR = -32003
RUNTIME_ERROR = -32004

# A FlowResult error carries an integer code on the wire (0.9.2's FlowError.code is an int),
# ours a string. One distinct integer per string, so a server can map it back.
FLOW_ERROR_CODES: dict[str, int] = {
    ErrorCode.COMPONENT_FAILED: EXECUTION_ERROR,
    ErrorCode.INVALID_INPUT: VALIDATION_ERROR,
    ErrorCode.INTERNAL: RUNTIME_ERROR,
    ErrorCode.UNREACHABLE: -32010,
    ErrorCode.TIMEOUT: -32011,
    ErrorCode.CANCELLED: -32012,
    ErrorCode.VALIDATION_FAILED: -32013,
    ErrorCode.EXPRESSION_FAILED: -32014,
}

_NOT_RETRYABLE = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND}
_INVALID_INPUT = {INVALID_PARAMS, VALIDATION_ERROR}


class RpcError(msgspec.Struct):
    """The ``error`` member of a JSON-RPC response."""

    code: int
    message: str
    data: Any = None


class RpcMessage(msgspec.Struct):
    """Any JSON-RPC message; ``result`` is UNSET unless the message is a success response."""

    id: int | str | None = None
    method: str | None = None
    params: Any = None
    result: Any = msgspec.UNSET
    error: RpcError | None = None


encode = msgspec.json.Encoder().encode
decode_message = msgspec.json.Decoder(RpcMessage).decode


def request(request_id: int | str, method: str, params: JSONObject) -> bytes:
    """The body of a JSON-RPC request."""
    return encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def notification(method: str, params: JSONObject) -> bytes:
    """The body of a JSON-RPC notification (no id, no answer)."""
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def success(request_id: int | str, result: JSON) -> bytes:
    """The body of a success response."""
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def failure(request_id: int | str, code: int, message: str, data: JSON = None) -> bytes:
    """The body of an error response."""
    error: JSONObject = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": request_id, "error": error})


def component_error(error: RpcError) -> ComponentError:
    """Our error for a JSON-RPC error a component server answered.

    Invalid params (-32602) and the SDK's validation error (-32002) are the caller's fault:
    INVALID_INPUT, not retryable. Malformed requests and unknown methods cannot succeed on a
    retry either. Anything else is the component failing: COMPONENT_FAILED, retryable unless
    the server says ``data.retryable: false``.
    """
    data = error.data
    if error.code in _INVALID_INPUT:
        return ComponentError(ErrorCode.INVALID_INPUT, error.message, retryable=False, data=data)
    retryable = error.code not in _NOT_RETRYABLE
    if isinstance(data, dict) and data.get("retryable") is False:
        retryable = False
    return ComponentError(ErrorCode.COMPONENT_FAILED, error.message, retryable=retryable, data=data)


def error_for(exc: BaseException) -> tuple[int, str, JSON]:
    """The JSON-RPC error ``(code, message, data)`` answering a callback that raised ``exc``."""
    if isinstance(exc, ComponentError):
        code = INVALID_PARAMS if exc.code == ErrorCode.INVALID_INPUT else FLOW_ERROR_CODES.get(
            exc.code, GENERIC_ERROR
        )
        return code, exc.message, exc.data
    return INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", None


def wire_flow_result(result: FlowResult) -> JSONObject:
    """A FlowResult as 0.9.2 decodes it: the error code is an integer, the string kept in data.

    ``data`` becomes ``{"code": <our string code>, **data}`` when the error's data is an object
    or absent, so nothing is lost; other data is passed as it is.
    """
    if result.error is None:
        return {"outcome": "success", "result": result.result}
    error = result.error
    data: JSON = error.data
    if data is None or isinstance(data, dict):
        data = {"code": error.code, **(data or {})}
    return {
        "outcome": "failed",
        "error": {
            "code": FLOW_ERROR_CODES.get(error.code, GENERIC_ERROR),
            "message": error.message,
            "data": data,
        },
    }
