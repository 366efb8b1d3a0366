"""Errors of the component-server SDK, and the JSON-RPC error codes it puts on the wire.

    StepflowError (stepflow_stream.errors)
    ├── ComponentError     raised by a component to fail with a chosen code, retryability, data
    └── CallbackError      the caller answered a callback (blobs/*, runs/*) with an error
"""

from __future__ import annotations

from enum import IntEnum

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import StepflowError


class RpcErrorCode(IntEnum):
    """``error.code`` values of the JSON-RPC responses a component server sends.

    The -327xx/-326xx codes are JSON-RPC 2.0's own; -32001..-32003 are those of the
    reference SDK (stepflow-py 0.9.2: COMPONENT_ERROR, VALIDATION_ERROR, EXECUTION_ERROR).
    """

    PARSE_ERROR = -32700
    """The body is not JSON."""
    INVALID_REQUEST = -32600
    """The body is JSON but not a JSON-RPC 2.0 message, or answers no pending callback."""
    METHOD_NOT_FOUND = -32601
    """A well-formed request for a method this server does not implement."""
    INVALID_PARAMS = -32602
    """A known method with params of the wrong shape (``component`` missing, say)."""
    INTERNAL_ERROR = -32603
    """A bug in the server itself."""
    SERVER_BUSY = -32000
    """``components/execute`` refused at capacity (sent with HTTP 503)."""
    COMPONENT_NOT_FOUND = -32001
    """No registered component (or path pattern) matches the requested name."""
    INVALID_INPUT = -32002
    """The input does not decode into the component's input type; never retryable."""
    COMPONENT_FAILED = -32003
    """The component raised; the default code of :class:`ComponentError`."""


class ComponentError(StepflowError):
    """Raise from a component to fail the step on your own terms.

    Any other exception fails the step too, as a retryable ``COMPONENT_FAILED`` error whose
    message names the exception type; this one lets the component pick the message, the code,
    whether ``onError: retry`` may try again, and extra data for the caller.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int = RpcErrorCode.COMPONENT_FAILED,
        retryable: bool = True,
        data: JSON = None,
    ) -> None:
        super().__init__(message)
        self.code = int(code)
        self.retryable = retryable
        self.data = data

    def __repr__(self) -> str:
        return (
            f"ComponentError({self.message!r}, code={self.code}, retryable={self.retryable})"
        )


class CallbackError(StepflowError):
    """The caller answered a callback (``blobs/put``, ``blobs/get``, ``runs/submit``,
    ``runs/get``) with a JSON-RPC error, or with a result of the wrong shape.

    Left uncaught, it fails the component like any exception."""

    def __init__(self, method: str, code: int, message: str, data: JSON = None) -> None:
        super().__init__(f"{method} failed: {message} (code {code})")
        self.method = method
        self.code = code
        self.data = data
