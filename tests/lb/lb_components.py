"""Components served by the SDK behind the load balancer in its tests
(``lb_components:server``, run with ``serve-components --app-dir tests/lb``)."""

from __future__ import annotations

import asyncio
from typing import Any

from stepflow_stream.sdk import ComponentServer, Context

server = ComponentServer("lb")


@server.component()
async def slow(input: dict[str, float]) -> dict[str, float]:
    """Sleeps ``input.seconds``, holding a connection that long."""
    await asyncio.sleep(input["seconds"])
    return input


@server.component()
async def store(input: dict[str, Any], context: Context) -> dict[str, Any]:
    """Calls back: stores ``input`` as a blob with the caller, and returns the blob id."""
    blob_id = await context.put_blob(input)
    return {"blob_id": blob_id}
