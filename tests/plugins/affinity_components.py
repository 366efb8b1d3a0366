"""Components served by the SDK for the instance-affinity tests (``affinity_components:server``,
run with ``serve-components --app-dir tests/plugins``)."""

from __future__ import annotations

import asyncio
from typing import Any

from stepflow_stream.sdk import ComponentServer

server = ComponentServer("affinity")


@server.component()
async def echo(input: dict[str, Any]) -> dict[str, Any]:
    """The input back."""
    return input


@server.component()
async def slow(input: dict[str, float]) -> dict[str, float]:
    """Sleeps ``input.seconds``: holds an execution slot that long."""
    await asyncio.sleep(input["seconds"])
    return input
