"""API errors as JSON ``{"code": ..., "message": ...}``, and the reading of request bodies
into checked fields whose errors name the field.

    ApiError                 an answer other than 2xx, with its status, code and message
    (handlers)               Starlette's HTTPException (unknown path, wrong method), the
                             package's own errors and anything unexpected, all as ApiError JSON
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import RunNotFoundError, ServiceUnavailableError, UserInputError

__all__ = ["CONTENT_ID", "ERROR_CODES", "NAME_MAX_LENGTH", "NAME_PATTERN", "ApiError", "Body",
           "exception_handlers", "is_name", "read_json", "storable"]

log = logging.getLogger("stepflow_stream.gateway")

_HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT",
               413: "PAYLOAD_TOO_LARGE", 503: "UNAVAILABLE"}
ERROR_CODES = [*_HTTP_CODES.values(), "INTERNAL", "ERROR"]
"""Every ``code`` an error answer can have."""

CONTENT_ID = re.compile(r"[0-9a-f]{64}")
"""A content id (a flow's or a blob's): the SHA-256 hex of its content."""
NAME_MAX_LENGTH = 256
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f]*$"
"""Ids the client chooses (run ids, blob types): at most ``NAME_MAX_LENGTH``
characters, none a control character (PostgreSQL text cannot hold NUL, and logs and SSE lines
should not break on a newline)."""
_NAME = re.compile(f"[^\\x00-\\x1f\\x7f]{{1,{NAME_MAX_LENGTH}}}")


def is_name(value: str) -> bool:
    """Whether ``value`` can be a run id or a blob type the client chooses."""
    return _NAME.fullmatch(value) is not None


def storable(value: str) -> bool:
    """Whether PostgreSQL text can hold ``value`` (no NUL, no lone surrogate): an id that it
    cannot hold is none that exists, and is not looked up (the query would fail)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


class ApiError(Exception):
    """An error answer: ``status`` is the HTTP status, ``code`` a stable name for programs,
    ``message`` names the field or thing at fault."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message},
                            status_code=self.status, headers=self.headers)


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


async def read_json(request: Request, max_bytes: int) -> JSON:
    """The request body as JSON; 413 past ``max_bytes`` (read no further), 400 if malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise invalid("the request body is empty; send a JSON object")
    try:
        value: JSON = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except UnicodeDecodeError:
        raise invalid("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
                      f"column {exc.colno})") from None
    except ValueError as exc:  # an integer past Python's digit limit
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    if b"\\u" in raw:
        _check_surrogates(value)
    return value


def _not_a_number(name: str) -> NoReturn:
    # Python reads NaN and Infinity, which JSON has not: stored, they could not be answered.
    raise invalid(f"the request body is not valid JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise invalid(f"the request body has the number {text[:40]}, too large for a "
                      "double-precision number")
    return value


def _check_surrogates(value: JSON) -> None:
    """400 for a string with a lone UTF-16 surrogate escape (``"\\ud800"``): JSON lets it
    through, but it is no character, and UTF-8 (PostgreSQL, Kafka) cannot encode it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("the request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff) "
                      "in a string; it is not a character") from None


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE",
                    f"the request body is larger than the limit of {max_bytes} bytes "
                    "(gateway.maxBodyBytes)")


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object",
               list: "an array"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


class Body:
    """A JSON object body whose fields are taken one by one, each checked by type; a field
    the route does not know is an error, so a misspelt one is not silently ignored. A field
    that is present has its type: null is no string, number, boolean, object or array."""

    def __init__(self, value: JSON, known: tuple[str, ...]) -> None:
        if not isinstance(value, dict):
            raise invalid(f"the request body is a JSON object, got {_json_type(value)}")
        unknown = [key for key in value if key not in known]
        if unknown:
            raise invalid(f"unknown field '{unknown[0]}'; known fields: {', '.join(known)}")
        self.value: dict[str, JSON] = value

    def has(self, name: str) -> bool:
        """Whether the field is given, and not null (as an ``any`` field, null is absent)."""
        return self.value.get(name) is not None

    def any(self, name: str, *, required: bool = False) -> JSON:
        if required and name not in self.value:
            raise invalid(f"'{name}' is required")
        return self.value.get(name)

    def text(self, name: str, *, required: bool = False) -> str | None:
        return self._typed(name, str, required)  # type: ignore[no-any-return]

    def name(self, name: str) -> str | None:
        """An id the client chooses (see :func:`is_name`), or None when absent."""
        value = self.text(name)
        if value is not None and not is_name(value):
            raise invalid(f"'{name}' is 1 to {NAME_MAX_LENGTH} characters, none of them a "
                          f"control character; got {_excerpt(value)}")
        return value

    def flow_id(self, name: str = "flowId") -> str:
        """A flow's id, required: the 64 hex digits ``POST /api/v1/flows`` answered."""
        value = self.text(name, required=True)
        assert value is not None
        if not CONTENT_ID.fullmatch(value):
            raise invalid(f"'{name}' is a flow's id, the 64 lowercase hex digits "
                          f"POST /api/v1/flows answered; got {_excerpt(value)}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self._typed(name, bool, False)
        return default if value is None else bool(value)

    def number(self, name: str) -> float | None:
        if name not in self.value:
            return None
        value = self.value[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise invalid(f"'{name}' is a positive number, got {_excerpt(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer past any double: as long as "forever"
            return math.inf

    def object(self, name: str) -> dict[str, JSON] | None:
        return self._typed(name, dict, False)  # type: ignore[no-any-return]

    def array(self, name: str, *, required: bool = False) -> list[JSON] | None:
        return self._typed(name, list, required)  # type: ignore[no-any-return]

    def _typed(self, name: str, kind: type, required: bool) -> Any:
        if name not in self.value:
            if required:
                raise invalid(f"'{name}' is required ({_TYPE_NAMES[kind]})")
            return None
        value = self.value[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise invalid(f"'{name}' is {_TYPE_NAMES[kind]}, got {_json_type(value)}")
        if kind is str and not value:
            raise invalid(f"'{name}' is a non-empty string")
        return value


def _excerpt(value: JSON) -> str:
    """``value`` as JSON, cut to a length that fits in one line of a message."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else f"{text[:57]}..."


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "ERROR")
    return ApiError(exc.status_code, code, exc.detail, exc.headers).response()


async def _user_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UserInputError)
    if isinstance(exc, RunNotFoundError):
        return not_found(exc.message).response()
    return invalid(exc.message).response()


async def _unavailable(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceUnavailableError)
    return ApiError(503, "UNAVAILABLE", exc.message).response()


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "INTERNAL", f"internal error: {type(exc).__name__}").response()


def exception_handlers() -> dict[Any, Any]:
    """Every error as ``{"code", "message"}`` JSON, for ``Starlette(exception_handlers=)``."""
    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        UserInputError: _user_error,
        ServiceUnavailableError: _unavailable,
        Exception: _internal,
    }
