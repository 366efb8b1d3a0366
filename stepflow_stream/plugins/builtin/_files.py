"""``/load_file``: read a JSON, YAML or text file, never from outside the working directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

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
from stepflow_stream.plugins.builtin._inputs import Input, invalid

_FORMATS = ("json", "yaml", "text")
_SUFFIX_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


@component(
    "/load_file",
    "Read a JSON, YAML or text file below the working directory.",
    object_schema({"path": STRING, "format": {"enum": list(_FORMATS)}}, ["path"]),
    object_schema(
        {
            "data": ANY,
            "metadata": object_schema(
                {"path": STRING, "size": {"type": "integer"}, "format": {"enum": list(_FORMATS)}},
                ["path", "size", "format"],
            ),
        },
        ["data", "metadata"],
    ),
)
async def load_file(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/load_file", input)
    path = args.string("path", "a file path relative to the working directory")
    format = args.optional_string("format")
    if format is not None and format not in _FORMATS:
        raise invalid("/load_file", f"field 'format' must be json, yaml or text, got {format!r}")
    return await asyncio.to_thread(_read_file, settings.base_dir, path, format)


def _read_file(base_dir: Path, path: str, format: str | None) -> JSONObject:
    outside = invalid("/load_file", f"path {path!r} is outside the working directory")
    if Path(path).is_absolute():
        raise outside
    try:
        base = base_dir.resolve()
        # Resolving follows symlinks, so a link that points outside is caught here too.
        target = (base / path).resolve()
    except (OSError, ValueError) as exc:
        raise invalid("/load_file", f"cannot resolve path {path!r}: {exc}") from None
    if not target.is_relative_to(base):
        raise outside
    try:
        content = target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise invalid("/load_file", f"no file at {path!r} in the working directory") from None
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
