"""The component server of the crash tests: ``add_one`` adds one to a number."""

from __future__ import annotations

import asyncio

import msgspec

from stepflow_stream.sdk import ComponentServer

server = ComponentServer("crash", max_concurrency=256)


class Number(msgspec.Struct):
    value: int


@server.component(name="add_one", description="value + 1")
async def add_one(input: Number) -> Number:
    # A little work per call, so that a 1,000-run batch lasts long enough on a fast machine
    # for a crash to land in its middle.
    await asyncio.sleep(0.02)
    return Number(input.value + 1)
