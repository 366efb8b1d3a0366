"""``/put_blob`` and ``/get_blob``: the run's content-addressed blob store."""

from __future__ import annotations

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.plugins.base import ExecutionContext
from stepflow_stream.plugins.builtin._component import (
    ANY,
    STRING,
    Settings,
    component,
    object_schema,
)
from stepflow_stream.plugins.builtin._inputs import Input, invalid


@component(
    "/put_blob",
    "Store a value as a content-addressed blob; its id is the sha256 of its compact JSON.",
    object_schema({"data": ANY, "blob_type": {"enum": ["data", "flow"]}}, ["data"]),
    object_schema({"blob_id": STRING}, ["blob_id"]),
)
async def put_blob(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/put_blob", input)
    data = args.value("data", "the value to store")
    blob_type = args.optional_string("blob_type") or "data"
    if blob_type not in ("data", "flow"):
        raise invalid(
            "/put_blob", f"field 'blob_type' must be 'data' or 'flow', got {blob_type!r}"
        )
    if blob_type == "flow" and not isinstance(data, dict):
        raise args.wrong("data", "an object (a flow) when blob_type is 'flow'")
    return {"blob_id": await context.put_blob(data, blob_type)}


@component(
    "/get_blob",
    "Read the value stored under a blob id.",
    object_schema({"blob_id": STRING}, ["blob_id"]),
    object_schema({"data": ANY}, ["data"]),
)
async def get_blob(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    blob_id = Input("/get_blob", input).string("blob_id", "the id returned by /put_blob")
    return {"data": await context.get_blob(blob_id)}
