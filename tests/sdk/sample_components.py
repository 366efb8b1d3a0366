"""Components served by the SDK tests (``tests.sdk.sample_components:server``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec

from stepflow_stream.sdk import ComponentError, ComponentServer, Context, SyncContext

server = ComponentServer("samples")


class Pair(msgspec.Struct):
    a: int
    b: int


class Sum(msgspec.Struct):
    sum: int


@server.component(description="Add two integers.")
async def add(input: Pair) -> Sum:
    return Sum(input.a + input.b)


@dataclass
class Greeting:
    name: str
    punctuation: str = "!"


@dataclass
class Greeted:
    message: str


@server.component()
def greet(input: Greeting) -> Greeted:
    """Greet someone (a plain function, run in a thread)."""
    print("greeting", input.name)  # must reach stderr, not the port line's stdout
    return Greeted(f"Hello, {input.name}{input.punctuation}")


class Value(msgspec.Struct):
    value: Any
    store: bool = True


class Stored(msgspec.Struct):
    blob_id: str | None
    fetched: Any


@server.component(name="blobs/roundtrip")
async def roundtrip(input: Value, context: Context) -> Stored:
    """Store the value as a blob and read it back; without ``store`` it makes no callback."""
    if not input.store:
        return Stored(None, input.value)
    blob_id = await context.put_blob(input.value)
    return Stored(blob_id, await context.get_blob(blob_id))


class BlobRef(msgspec.Struct):
    blob_id: str


@server.component(name="blobs/fetch")
async def fetch(input: BlobRef, context: Context) -> Any:
    return await context.get_blob(input.blob_id)


@server.component(name="blobs/sync_put")
def sync_put(input: Value, context: SyncContext) -> Stored:
    blob_id = context.put_blob(input.value)
    return Stored(blob_id, context.get_blob(blob_id))


class SubFlow(msgspec.Struct):
    flow: dict[str, Any]
    input: Any


@server.component(name="flows/evaluate")
async def evaluate(input: SubFlow, context: Context) -> dict[str, Any]:
    return {"flow_result": await context.evaluate_flow(input.flow, input.input)}


class Failure(msgspec.Struct):
    message: str
    retryable: bool = True


@server.component()
async def fail(input: Failure) -> None:
    raise ValueError(input.message)


@server.component()
def refuse(input: Failure) -> None:
    raise ComponentError(input.message, code=-32050, retryable=input.retryable, data={"why": 42})


class Sleep(msgspec.Struct):
    seconds: float


@server.component()
async def slow(input: Sleep) -> dict[str, float]:
    await asyncio.sleep(input.seconds)
    return {"slept": input.seconds}


@server.component(name="core/{*component}")
async def core(input: dict[str, Any], context: Context, component: str) -> dict[str, Any]:
    """Echo which component path was asked for, and the step's ids."""
    return {
        "component": component,
        "path_params": context.path_params,
        "run_id": context.run_id,
        "step_id": context.step_id,
        "flow_id": context.flow_id,
        "attempt": context.attempt,
        "input": input,
    }
