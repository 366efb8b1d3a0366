"""Server-sent events, just enough to read a component server's ``text/event-stream`` answer.

Only ``data:`` fields matter to the Stepflow protocol (each event's data is one JSON-RPC
message); ``event:``, ``id:``, ``retry:`` and comment lines are skipped. Written here rather than
taken from a package because it is twenty lines over a response's lines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable


async def sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """The data of each complete event in ``lines`` (line endings already stripped).

    Several ``data:`` lines of one event are joined with ``\\n``. An event cut off by the end of
    the stream (no blank line after it) is dropped, as the SSE standard says: a half-sent frame
    must not pass for a whole message.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
