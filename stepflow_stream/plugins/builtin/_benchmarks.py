"""``/noop`` and ``/sleep``: components that cost nothing or only time, for benchmarks."""

from __future__ import annotations

import asyncio

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.plugins.base import ExecutionContext
from stepflow_stream.plugins.builtin._component import ANY, Settings, component, object_schema
from stepflow_stream.plugins.builtin._inputs import Input, invalid


@component("/noop", "Do nothing; returns {}.", {"type": "object"}, {"type": "object"})
async def noop(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    return {}


@component(
    "/sleep",
    "Wait duration_ms milliseconds, then return passthrough (or {}).",
    object_schema(
        {"duration_ms": {"type": "number", "minimum": 0}, "passthrough": ANY}, ["duration_ms"]
    ),
    {},
)
async def sleep(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/sleep", input)
    duration_ms = args.number("duration_ms", "how long to wait, in milliseconds")
    if duration_ms < 0:
        raise invalid("/sleep", f"field 'duration_ms' must be >= 0, got {duration_ms:g}")
    await asyncio.sleep(duration_ms / 1000)
    return args.fields.get("passthrough", {})
