"""The component server of the component benchmark: one echo component."""

from __future__ import annotations

from typing import Any

from stepflow_stream.sdk import ComponentServer

server = ComponentServer(name="bench", max_concurrency=256)


@server.component(name="echo", description="Returns its input.")
async def echo(input: dict[str, Any]) -> dict[str, Any]:
    return input
