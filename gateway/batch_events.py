"""``GET /api/v1/batches/{batch_id}/events``: a batch's results and progress as Server-Sent
Events, for a client that submitted N runs and wants each result as soon as it is known.

Messages:

- ``event: result`` per finished run, ``id`` its batch index, ``data``
  ``{runId, batchIndex, status, result}`` (``result`` is the run's FlowResult);
- ``event: progress`` after each group of results, ``data`` ``{size, done, failed}``;
- ``event: BatchFinished`` last, with the final progress; then the stream ends.

Results come in the order runs finish, not in batch order. A client that reconnects gets the
results already known again (key them by ``batchIndex``), then the rest as they come. Runs
already finished come from the run index in PostgreSQL; live ones from the gateway's one
journal consumer (:class:`gateway.events.JournalFeed`). A run that finished just before the
subscription but after the index was read is found by reading the index again while nothing
arrives, so none is missed at the seam.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api_errors import storable
from gateway.events import TERMINAL_EVENTS, EventStream, JournalFeed, visible_to
from stepflow_stream.core.events import Event, FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.state import RunStatus
from stepflow_stream.distributed.client import batch_run_id
from stepflow_stream.journal.base import RunSummary
from stepflow_stream.journal.projection import next_summary

__all__ = ["batch_event_routes"]

_REREAD_S = 1.0
"""How long a stream waits for live results before reading the run index again."""

_FINISHED = """
    SELECT run_id, batch_index, status, result FROM runs
    WHERE batch_id = $1 AND finished_at IS NOT NULL AND NOT (batch_index = ANY($2::int[]))
"""


@dataclass(slots=True)
class _Progress:
    size: int
    done: int = 0
    failed: int = 0

    def json(self) -> JSONObject:
        return {"size": self.size, "done": self.done, "failed": self.failed}


def _encode(event: str, data: JSON, id: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(data=text, event=event, id=id).encode()


class _BatchStream:
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], batch_id: str, size: int) -> None:
        self.pool = pool
        self.batch_id = batch_id
        self.progress = _Progress(size)
        self.reported: set[int] = set()

    def result(self, run_id: str, index: int, status: str, result: FlowResult | None) -> bytes:
        self.reported.add(index)
        self.progress.done += 1
        if status != RunStatus.COMPLETED.value:
            self.progress.failed += 1
        data: JSONObject = {"runId": run_id, "batchIndex": index, "status": status,
                            "result": result.to_json() if result is not None else None}
        return _encode("result", data, id=str(index))

    async def from_index(self) -> list[bytes]:
        """The finished runs the index has that the stream has not reported yet."""
        rows = await self.pool.fetch(_FINISHED, self.batch_id, list(self.reported))
        messages = []
        for row in sorted(rows, key=lambda r: r["batch_index"]):
            raw = row["result"]
            result = FlowResult.from_json(json.loads(raw)) if raw is not None else None
            messages.append(self.result(row["run_id"], row["batch_index"], row["status"],
                                        result))
        return messages

    @property
    def finished(self) -> bool:
        return self.progress.done >= self.progress.size

    def chunk(self, messages: list[bytes]) -> bytes:
        return b"".join([*messages, _encode("progress", self.progress.json())])

    async def messages(self, queue: asyncio.Queue[Event], indexes: dict[str, int],
                       ) -> AsyncIterator[bytes]:
        yield self.chunk(await self.from_index())
        while not self.finished:
            try:
                deliveries = [await asyncio.wait_for(queue.get(), _REREAD_S)]
            except TimeoutError:
                found = await self.from_index()
                if found:
                    yield self.chunk(found)
                continue
            while not queue.empty():
                deliveries.append(queue.get_nowait())
            found = []
            for event in deliveries:
                if not isinstance(event, TERMINAL_EVENTS):
                    continue
                index = indexes[event.run_id]
                if index in self.reported:
                    continue
                after = next_summary(RunSummary(event.run_id, "", RunStatus.RUNNING, 0), event)
                if after is not None:
                    found.append(self.result(event.run_id, index, after.status.value,
                                             after.result))
            if found:
                yield self.chunk(found)
        yield _encode("BatchFinished", self.progress.json())


def batch_event_routes(*, ping_s: float = 15.0) -> list[Route]:
    """The batch stream, to mount beside :func:`gateway.events.event_routes` (it needs the
    same lifespan, :func:`gateway.events.serving_events`)."""

    async def batch_events(request: Request) -> Response:
        feed: JournalFeed = request.app.state.journal_feed
        pool: asyncpg.Pool[asyncpg.Record] = request.app.state.event_database.pool
        batch_id = request.path_params["batch_id"]
        size = await pool.fetchval("SELECT size FROM batches WHERE batch_id = $1",
                                   batch_id) if storable(batch_id) else None
        if size is None or not await visible_to(request, batch_run_id(batch_id, 0)):
            return JSONResponse(
                {"code": "NOT_FOUND", "message": f"no batch with id '{batch_id}'"},
                status_code=404,
            )
        indexes = {batch_run_id(batch_id, i): i for i in range(size)}
        await feed.ready.wait()
        subscription = feed.subscribe(*indexes)
        queue = subscription.__enter__()
        stream = _BatchStream(pool, batch_id, size)
        return EventStream(stream.messages(queue, indexes),
                           on_close=lambda: subscription.__exit__(None, None, None),
                           ping=int(ping_s) or 1, headers={"Cache-Control": "no-store"})

    return [Route("/api/v1/batches/{batch_id}/events", batch_events, methods=["GET"])]
