"""The ports of persistence: the journal (events and the run index) and the blob store.

Adapters (memory, SQLite; Postgres and Kafka in the distributed runtime) implement these small
abstract classes and all pass one contract suite (``tests/unit/test_store_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from stepflow_stream.core.events import Event, FlowResult
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.state import RunStatus


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A row of the run index: what ``runs list`` shows without folding a journal."""

    run_id: str
    flow_id: str
    status: RunStatus
    created_at: int
    """Milliseconds since the epoch, from the RunCreated event."""
    finished_at: int | None = None
    result: FlowResult | None = None
    parent_run_id: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None


class Journal(ABC):
    """Per-run event logs with a contiguous ``seq``, plus the run index derived from them."""

    @abstractmethod
    def write(self, events: Sequence[Event]) -> Awaitable[None]:
        """Schedule ``events`` for appending and return an awaitable that completes once they
        are durable. Successive calls are appended in call order; concurrent writers share one
        commit (group commit). Appending an event whose (run_id, seq) is stored already keeps
        the stored one, so replaying a write is harmless."""

    async def append(self, events: Sequence[Event]) -> None:
        """Append ``events`` and wait until they are durable."""
        await self.write(events)

    @abstractmethod
    async def read(self, run_id: str, after_seq: int = -1) -> list[Event]:
        """The run's events with ``seq > after_seq``, in seq order (empty for an unknown run)."""

    @abstractmethod
    async def get_run(self, run_id: str) -> RunSummary | None:
        """The run's index row, or None."""

    @abstractmethod
    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunSummary]:
        """Runs, newest first, optionally of one status."""

    @abstractmethod
    async def unfinished_runs(self) -> list[str]:
        """Ids of runs without a terminal event, oldest first: what a restart resumes."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""


class BlobStore(ABC):
    """Content-addressed values: flows and large data, keyed by sha256 of compact JSON."""

    @abstractmethod
    async def put(self, data: JSON, blob_type: str = "data") -> str:
        """Store ``data`` durably and return its id (storing it again is harmless)."""

    @abstractmethod
    async def get(self, blob_id: str) -> JSON:
        """The value stored under ``blob_id``; raises KeyError when there is none."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
