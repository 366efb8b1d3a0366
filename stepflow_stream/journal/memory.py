"""In-memory journal and blob store: for tests and for runs that need no durability."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence

from stepflow_stream.core.events import Event
from stepflow_stream.core.jsonvalue import JSON, compact_json, content_id
from stepflow_stream.core.state import RunStatus
from stepflow_stream.journal.base import BlobStore, Journal, RunSummary
from stepflow_stream.journal.projection import next_summary


class MemoryJournal(Journal):
    """Events in dicts; ``write`` is durable at once (there is nothing to wait for)."""

    def __init__(self) -> None:
        self._events: dict[str, dict[int, Event]] = {}
        self._runs: dict[str, RunSummary] = {}

    def write(self, events: Sequence[Event]) -> Awaitable[None]:
        for event in events:
            log = self._events.setdefault(event.run_id, {})
            if event.seq in log:
                continue
            log[event.seq] = event
            summary = next_summary(self._runs.get(event.run_id), event)
            if summary is not None:
                self._runs[event.run_id] = summary
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def read(self, run_id: str, after_seq: int = -1) -> list[Event]:
        log = self._events.get(run_id, {})
        return [log[seq] for seq in sorted(log) if seq > after_seq]

    async def get_run(self, run_id: str) -> RunSummary | None:
        return self._runs.get(run_id)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunSummary]:
        runs = [r for r in self._runs.values() if status is None or r.status is status]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return runs[offset : offset + limit]

    async def unfinished_runs(self) -> list[str]:
        runs = [r for r in self._runs.values() if not r.status.terminal]
        return [r.run_id for r in sorted(runs, key=lambda r: (r.created_at, r.run_id))]


class MemoryBlobStore(BlobStore):
    """Blobs in a dict."""

    def __init__(self) -> None:
        # Stored as text, so a caller mutating a value it put or got cannot change the blob.
        self._blobs: dict[str, str] = {}

    async def put(self, data: JSON, blob_type: str = "data") -> str:
        text = compact_json(data)
        blob_id = content_id(data)
        self._blobs.setdefault(blob_id, text)
        return blob_id

    async def get(self, blob_id: str) -> JSON:
        return json.loads(self._blobs[blob_id])
