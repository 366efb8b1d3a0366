"""What the distributed runtime keeps in PostgreSQL besides the journal projection, the run
index, snapshots and blobs (:mod:`stepflow_stream.journal.postgres`): each journal partition's
checkpoint, and the notification of finished runs."""

from __future__ import annotations

from collections.abc import Sequence

from stepflow_stream.journal.postgres import PostgresDatabase

__all__ = ["RUNS_CHANNEL", "CheckpointStore", "notify_finished"]

RUNS_CHANNEL = "stepflow_runs_finished"
"""The LISTEN channel on which the id of each run is announced once its end is projected."""


class CheckpointStore:
    """The journal offset up to which a partition's runs are in their snapshots.

    A checkpoint is written after the snapshots it covers: catching up from it, an orchestrator
    loads the unfinished runs' snapshots and folds the journal from the checkpoint on.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool

    async def load(self, topic: str, partition: int) -> int:
        """The offset to fold from: 0 when the partition has no checkpoint yet."""
        offset = await self._pool.fetchval(
            "SELECT next_offset FROM journal_checkpoints WHERE topic = $1 AND partition = $2",
            topic, partition,
        )
        return int(offset) if offset is not None else 0

    async def save(self, topic: str, partition: int, next_offset: int) -> None:
        """Record ``next_offset``; a checkpoint never moves back."""
        await self._pool.execute(
            "INSERT INTO journal_checkpoints (topic, partition, next_offset) VALUES ($1, $2, $3) "
            "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset, "
            "updated_at = now() WHERE journal_checkpoints.next_offset < excluded.next_offset",
            topic, partition, next_offset,
        )


async def notify_finished(database: PostgresDatabase, run_ids: Sequence[str]) -> None:
    """Wake the clients waiting (LISTEN) for any of ``run_ids``."""
    if run_ids:
        await database.pool.execute(
            f"SELECT pg_notify('{RUNS_CHANNEL}', id) FROM unnest($1::text[]) AS id", list(run_ids)
        )
