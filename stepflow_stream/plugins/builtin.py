"""The builtin plugin: Stepflow's ``/builtin/...`` components, run in-process.

Every component is an async function registered with :func:`_builtin` next to its schemas.
Inputs are checked by hand rather than with jsonschema: it is faster on the hot path and the
messages name the component, the field and what was expected. A bad input is a
non-retryable ``INVALID_INPUT`` error.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin, PluginOptions

__all__ = ["BuiltinPlugin"]


@dataclass(frozen=True, slots=True)
class _Settings:
    """What components read besides their input: the working directory and OpenAI access."""

    base_dir: Path
    openai_api_key: str | None
    openai_base_url: str
    openai_model: str


Handler: TypeAlias = Callable[[JSON, ExecutionContext, _Settings], Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class _Builtin:
    handler: Handler
    description: str
    input_schema: JSONObject
    output_schema: JSONObject


_COMPONENTS: dict[str, _Builtin] = {}


def _builtin(
    name: str, description: str, input_schema: JSONObject, output_schema: JSONObject
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _COMPONENTS[name] = _Builtin(handler, description, input_schema, output_schema)
        return handler

    return register


class BuiltinPlugin(Plugin):
    """Stepflow's builtin components. ``/load_file`` reads only below ``base_dir``.

    Settings (all optional): ``openai_api_key`` (else the ``OPENAI_API_KEY`` environment
    variable at call time), ``openai_base_url``, ``openai_model``.
    """

    def __init__(self, options: PluginOptions, *, base_dir: Path) -> None:
        self.name = options.name
        self._settings = _Settings(
            base_dir=base_dir,
            openai_api_key=_setting(options, "openai_api_key"),
            openai_base_url=_setting(options, "openai_base_url") or "https://api.openai.com/v1",
            openai_model=_setting(options, "openai_model") or "gpt-4o-mini",
        )

    def has_component(self, component: str) -> bool:
        return component in _COMPONENTS

    async def list_components(self) -> list[ComponentInfo]:
        return [
            ComponentInfo(
                component=name,
                description=builtin.description,
                input_schema=copy.deepcopy(builtin.input_schema),
                output_schema=copy.deepcopy(builtin.output_schema),
            )
            for name, builtin in _COMPONENTS.items()
        ]

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        builtin = _COMPONENTS.get(component)
        if builtin is None:
            offered = ", ".join(sorted(_COMPONENTS))
            raise ComponentError(
                ErrorCode.VALIDATION_FAILED,
                f"builtin plugin '{self.name}' has no component '{component}' "
                f"(it offers {offered})",
                retryable=False,
            )
        return await builtin.handler(input, context, self._settings)


def _setting(options: PluginOptions, key: str) -> str | None:
    value = options.settings.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(
            f"plugin '{options.name}': setting '{key}' must be a string, got {_json_type(value)}"
        )
    return value


# Reading inputs ---------------------------------------------------------------------------------


def _json_type(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _invalid(component: str, message: str) -> ComponentError:
    return ComponentError(ErrorCode.INVALID_INPUT, f"{component}: {message}", retryable=False)


class _Input:
    """A component's input object, read field by field; errors name the component and field.

    An optional field that is null counts as absent (expressions such as ``$coalesce`` often
    produce null)."""

    __slots__ = ("component", "fields")

    def __init__(self, component: str, value: JSON) -> None:
        if not isinstance(value, dict):
            raise _invalid(component, f"input must be an object, got {_json_type(value)}")
        self.component = component
        self.fields: JSONObject = value

    def wrong(self, field: str, expected: str) -> ComponentError:
        got = _json_type(self.fields.get(field))
        return _invalid(self.component, f"field '{field}' must be {expected}, got {got}")

    def value(self, field: str, meaning: str) -> JSON:
        if field not in self.fields:
            raise _invalid(self.component, f"missing field '{field}' ({meaning})")
        return self.fields[field]

    def string(self, field: str, meaning: str) -> str:
        value = self.value(field, meaning)
        if not isinstance(value, str):
            raise self.wrong(field, "a string")
        return value

    def optional_string(self, field: str) -> str | None:
        value = self.fields.get(field)
        if value is not None and not isinstance(value, str):
            raise self.wrong(field, "a string")
        return value

    def array(self, field: str, meaning: str) -> list[JSON]:
        value = self.value(field, meaning)
        if not isinstance(value, list):
            raise self.wrong(field, "an array")
        return value

    def optional_positive_int(self, field: str) -> int | None:
        value = self.fields.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.wrong(field, "a positive integer")
        return value

    def number(self, field: str, meaning: str) -> float:
        value = self.value(field, meaning)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong(field, "a number")
        return float(value)

    def optional_number(self, field: str) -> float | None:
        return None if self.fields.get(field) is None else self.number(field, "")

    def flow(self, field: str, meaning: str) -> JSONObject | str:
        """An inline flow (object) or the blob id (string) of one."""
        value = self.value(field, meaning)
        if not isinstance(value, dict | str):
            raise self.wrong(field, "a flow (object) or the blob id of one (string)")
        return value


async def _resolve_flow(
    component: str, flow: JSONObject | str, context: ExecutionContext
) -> JSONObject:
    if isinstance(flow, dict):
        return flow
    stored = await context.get_blob(flow)
    if not isinstance(stored, dict):
        raise _invalid(component, f"blob {flow} holds {_json_type(stored)}, not a flow")
    return stored


# Messages and blobs -----------------------------------------------------------------------------

_STRING: JSONObject = {"type": "string"}
_ANY: JSONObject = {}
_FLOW: JSONObject = {
    "description": "an inline flow, or the blob id of one",
    "type": ["object", "string"],
}
_FLOW_RESULT: JSONObject = {
    "type": "object",
    "properties": {"outcome": {"enum": ["success", "failed"]}, "result": {}, "error": {}},
    "required": ["outcome"],
}


def _object_schema(properties: JSONObject, required: list[str]) -> JSONObject:
    return {"type": "object", "properties": properties, "required": required}


@_builtin(
    "/create_messages",
    "Build a chat message list from optional system instructions and a user prompt.",
    _object_schema(
        {"system_instructions": {"type": ["string", "null"]}, "user_prompt": _STRING},
        ["user_prompt"],
    ),
    _object_schema(
        {
            "messages": {
                "type": "array",
                "items": _object_schema({"role": _STRING, "content": _STRING}, ["role", "content"]),
            }
        },
        ["messages"],
    ),
)
async def _create_messages(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/create_messages", input)
    system = args.optional_string("system_instructions")
    prompt = args.string("user_prompt", "the user's message")
    messages: list[JSON] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return {"messages": messages}


@_builtin(
    "/put_blob",
    "Store a value as a content-addressed blob; its id is the sha256 of its compact JSON.",
    _object_schema({"data": _ANY, "blob_type": {"enum": ["data", "flow"]}}, ["data"]),
    _object_schema({"blob_id": _STRING}, ["blob_id"]),
)
async def _put_blob(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/put_blob", input)
    data = args.value("data", "the value to store")
    blob_type = args.optional_string("blob_type") or "data"
    if blob_type not in ("data", "flow"):
        raise _invalid(
            "/put_blob", f"field 'blob_type' must be 'data' or 'flow', got {blob_type!r}"
        )
    if blob_type == "flow" and not isinstance(data, dict):
        raise args.wrong("data", "an object (a flow) when blob_type is 'flow'")
    return {"blob_id": await context.put_blob(data, blob_type)}


@_builtin(
    "/get_blob",
    "Read the value stored under a blob id.",
    _object_schema({"blob_id": _STRING}, ["blob_id"]),
    _object_schema({"data": _ANY}, ["data"]),
)
async def _get_blob(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    blob_id = _Input("/get_blob", input).string("blob_id", "the id returned by /put_blob")
    return {"data": await context.get_blob(blob_id)}


# Sub-flows --------------------------------------------------------------------------------------

# Codes of sub-run failures that would fail again the same way; /iterate marks them non-retryable.
_DETERMINISTIC_CODES = frozenset(
    {
        ErrorCode.INVALID_INPUT,
        ErrorCode.VALIDATION_FAILED,
        ErrorCode.EXPRESSION_FAILED,
        ErrorCode.CANCELLED,
    }
)


@_builtin(
    "/eval",
    "Run a flow (inline, or stored as a blob) as a sub-run and return its FlowResult.",
    _object_schema({"flow": {"type": "object"}, "flow_id": _STRING, "input": _ANY}, ["input"]),
    _object_schema({"result": _FLOW_RESULT, "run_id": _STRING}, ["result", "run_id"]),
)
async def _eval(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/eval", input)
    # Stepflow sends both when it knows the flow's id; the inline flow wins.
    flow: JSONObject | str
    if args.fields.get("flow") is not None:
        flow = args.fields["flow"]
        if not isinstance(flow, dict):
            raise args.wrong("flow", "an object (use 'flow_id' for a blob id)")
    elif args.fields.get("flow_id") is not None:
        flow = args.string("flow_id", "the blob id of the flow")
    else:
        raise _invalid("/eval", "missing field 'flow' (an inline flow) or 'flow_id' (a blob id)")
    value = args.value("input", "the sub-flow's input")
    result, run_id = await context.evaluate_flow(await _resolve_flow("/eval", flow, context), value)
    return {"result": result.to_json(), "run_id": run_id}


@_builtin(
    "/map",
    "Run a flow once per item, up to max_concurrency at a time; results are in item order.",
    _object_schema(
        {
            "workflow": _FLOW,
            "items": {"type": "array"},
            "max_concurrency": {"type": "integer", "minimum": 1},
        },
        ["workflow", "items"],
    ),
    _object_schema(
        {
            "results": {"type": "array", "items": _FLOW_RESULT},
            "successful": {"type": "integer"},
            "failed": {"type": "integer"},
        },
        ["results", "successful", "failed"],
    ),
)
async def _map(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/map", input)
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


@_builtin(
    "/iterate",
    "Run a flow repeatedly: each pass returns {next} to go on or {result} to stop.",
    _object_schema(
        {
            "flow": _FLOW,
            "initial_input": _ANY,
            "max_iterations": {"type": "integer", "minimum": 1, "default": 1000},
        },
        ["flow", "initial_input"],
    ),
    _object_schema(
        {"result": _ANY, "iterations": {"type": "integer"}, "terminated": {"type": "boolean"}},
        ["result", "iterations", "terminated"],
    ),
)
async def _iterate(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/iterate", input)
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
                f"/iterate: pass {iteration} returned {_json_type(output)} without 'next' or "
                "'result'; each pass must return {next: <input>} or {result: <value>}",
                retryable=False,
                data={"iteration": iteration, "run_id": run_id},
            )
        current = output["next"]
    return {"result": current, "iterations": max_iterations, "terminated": True}


# Files ------------------------------------------------------------------------------------------

_FORMATS = ("json", "yaml", "text")
_SUFFIX_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


@_builtin(
    "/load_file",
    "Read a JSON, YAML or text file below the working directory.",
    _object_schema({"path": _STRING, "format": {"enum": list(_FORMATS)}}, ["path"]),
    _object_schema(
        {
            "data": _ANY,
            "metadata": _object_schema(
                {"path": _STRING, "size": {"type": "integer"}, "format": {"enum": list(_FORMATS)}},
                ["path", "size", "format"],
            ),
        },
        ["data", "metadata"],
    ),
)
async def _load_file(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/load_file", input)
    path = args.string("path", "a file path relative to the working directory")
    format = args.optional_string("format")
    if format is not None and format not in _FORMATS:
        raise _invalid("/load_file", f"field 'format' must be json, yaml or text, got {format!r}")
    return await asyncio.to_thread(_read_file, settings.base_dir, path, format)


def _read_file(base_dir: Path, path: str, format: str | None) -> JSONObject:
    outside = _invalid("/load_file", f"path {path!r} is outside the working directory")
    if Path(path).is_absolute():
        raise outside
    try:
        base = base_dir.resolve()
        # Resolving follows symlinks, so a link that points outside is caught here too.
        target = (base / path).resolve()
    except (OSError, ValueError) as exc:
        raise _invalid("/load_file", f"cannot resolve path {path!r}: {exc}") from None
    if not target.is_relative_to(base):
        raise outside
    try:
        content = target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise _invalid("/load_file", f"no file at {path!r} in the working directory") from None
    except OSError as exc:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            f"/load_file: cannot read {path!r}: {exc.strerror}",
            retryable=False,
        ) from None
    format = format or _SUFFIX_FORMATS.get(target.suffix.lower(), "text")
    metadata = {"path": target.relative_to(base).as_posix(), "size": len(content), "format": format}
    return {"data": _decode(path, content, format), "metadata": metadata}


def _decode(path: str, content: bytes, format: str) -> JSON:
    try:
        text = content.decode("utf-8")
        if format == "json":
            return json.loads(text)
        if format == "yaml":
            # YAML-only scalars such as dates become strings, so the value is plain JSON.
            return json.loads(json.dumps(yaml.safe_load(text), default=str))
        return text
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            f"/load_file: {path!r} is not valid {format}: {exc}",
            retryable=False,
        ) from None


# Benchmarks -------------------------------------------------------------------------------------


@_builtin("/noop", "Do nothing; returns {}.", {"type": "object"}, {"type": "object"})
async def _noop(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    return {}


@_builtin(
    "/sleep",
    "Wait duration_ms milliseconds, then return passthrough (or {}).",
    _object_schema(
        {"duration_ms": {"type": "number", "minimum": 0}, "passthrough": _ANY}, ["duration_ms"]
    ),
    {},
)
async def _sleep(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/sleep", input)
    duration_ms = args.number("duration_ms", "how long to wait, in milliseconds")
    if duration_ms < 0:
        raise _invalid("/sleep", f"field 'duration_ms' must be >= 0, got {duration_ms:g}")
    await asyncio.sleep(duration_ms / 1000)
    return args.fields.get("passthrough", {})


# OpenAI -----------------------------------------------------------------------------------------

_OPENAI_TIMEOUT_S = 120.0


@_builtin(
    "/openai",
    "Chat completion with OpenAI (needs OPENAI_API_KEY and network access).",
    _object_schema(
        {
            "messages": {"type": "array"},
            "model": _STRING,
            "temperature": {"type": "number"},
            "max_tokens": {"type": "integer", "minimum": 1},
        },
        ["messages"],
    ),
    _object_schema({"response": _STRING}, ["response"]),
)
async def _openai(input: JSON, context: ExecutionContext, settings: _Settings) -> JSON:
    args = _Input("/openai", input)
    messages = args.array("messages", "the chat, e.g. from /create_messages")
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise _invalid(
                "/openai", f"messages[{index}] must be an object with string 'role' and 'content'"
            )
    body: JSONObject = {
        "model": args.optional_string("model") or settings.openai_model,
        "messages": messages,
    }
    temperature = args.optional_number("temperature")
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = args.optional_positive_int("max_tokens")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    api_key = settings.openai_api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            "/openai needs an API key: set OPENAI_API_KEY or the plugin's openai_api_key",
            retryable=False,
        )
    url = settings.openai_base_url.rstrip("/") + "/chat/completions"
    reply = await asyncio.to_thread(_post_json, url, body, api_key)
    try:
        return {"response": reply["choices"][0]["message"]["content"]}
    except (KeyError, IndexError, TypeError):
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED, "/openai: unexpected response shape", retryable=False
        ) from None


def _post_json(url: str, body: JSONObject, api_key: str) -> JSON:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_OPENAI_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            f"/openai: HTTP {exc.code}: {detail}",
            retryable=exc.code == 429 or exc.code >= 500,
        ) from None
    except TimeoutError:
        raise ComponentError(ErrorCode.TIMEOUT, "/openai: request timed out") from None
    except urllib.error.URLError as exc:
        raise ComponentError(ErrorCode.UNREACHABLE, f"/openai: {exc.reason}") from None
    except ValueError as exc:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED, f"/openai: response is not JSON: {exc}", retryable=False
        ) from None
