"""Run state snapshots: the port, its memory and SQLite adapters, and the state's encoding.

A snapshot is a run's :class:`RunState` as folded up to one event, so that a process taking
over a run (an orchestrator on partition assignment) folds only the journal after it::

    snapshot = await snapshots.load(run_id)
    state = decode_state(snapshot.state) if snapshot else RunState(run_id)
    for event in await journal.read(run_id, after_seq=snapshot.seq if snapshot else -1):
        apply(state, event)

A snapshot holds only what the journal determines: the fields of ``RunState`` that take part
in its equality. The scheduler's memo and the run's secrets (``compare=False``) are left out,
so a restored state has ``scheduled`` False and the scheduler rebuilds its memo, as after any
fold; the runtime supplies the secrets again. The Postgres adapter is in ``postgres.py``.
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgspec

from stepflow_stream.core.state import RunState, RunStatus, StepState
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.sqlite import SQLiteDatabase

__all__ = [
    "MemorySnapshotStore",
    "SQLiteSnapshotStore",
    "Snapshot",
    "SnapshotStore",
    "decode_state",
    "encode_state",
    "latest_per_run",
    "snapshot_of",
]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A run's encoded state after the event ``seq`` of its journal."""

    run_id: str
    seq: int
    """The last event folded into ``state``: what follows is ``journal.read(run_id, seq)``."""
    state: bytes
    """:func:`encode_state` of the run's state."""
    status: RunStatus
    """The run's status then, so unfinished runs are found without decoding states."""


class SnapshotStore(ABC):
    """The newest snapshot of each run. A save never replaces a snapshot by an older one."""

    async def save(self, run_id: str, seq: int, state: bytes, status: RunStatus) -> None:
        """Keep this snapshot unless the run has one with a ``seq`` as high already."""
        await self.save_many([Snapshot(run_id, seq, state, status)])

    @abstractmethod
    async def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        """Save several snapshots in one go (durable when this returns); for a run given more
        than once, the highest ``seq`` counts."""

    @abstractmethod
    async def load(self, run_id: str) -> Snapshot | None:
        """The run's newest snapshot, or None."""

    @abstractmethod
    async def load_many(self, run_ids: Iterable[str]) -> dict[str, Snapshot]:
        """The newest snapshots of those runs that have one, by run id."""

    @abstractmethod
    async def unfinished(self) -> list[Snapshot]:
        """Snapshots of runs that were not terminal when taken, by run id."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def latest_per_run(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    """Each run's snapshot with the highest seq (the first of equals), in first-seen order."""
    latest: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        kept = latest.get(snapshot.run_id)
        if kept is None or snapshot.seq > kept.seq:
            latest[snapshot.run_id] = snapshot
    return list(latest.values())


# The state's encoding -------------------------------------------------------------------------

_FORMAT = 1
_JOURNAL_FIELDS = tuple(f.name for f in fields(RunState) if f.compare)
_STEP_DEFAULTS = {f.name: getattr(StepState(), f.name) for f in fields(StepState)}
_encoder = msgspec.json.Encoder()


def encode_state(state: RunState) -> bytes:
    """The journal-determined part of ``state`` as compact JSON (a ``format`` field first)."""
    record: dict[str, Any] = {"format": _FORMAT}
    for name in _JOURNAL_FIELDS:
        record[name] = getattr(state, name)
    record["steps"] = {step_id: _step_record(step) for step_id, step in state.steps.items()}
    record["skipped"] = sorted(state.skipped)
    return _encoder.encode(record)


def _step_record(step: StepState) -> dict[str, Any]:
    """A step's fields that differ from a fresh StepState (most are unset in most states)."""
    record = {}
    for name, default in _STEP_DEFAULTS.items():
        value = getattr(step, name)
        if value is not default and value != default:
            record[name] = value
    return record


def decode_state(data: bytes) -> RunState:
    """The state :func:`encode_state` encoded, with an empty scheduler memo."""
    try:
        record = msgspec.json.decode(data)
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise JournalError("not a run state snapshot of a known format")
        journal_part = {name: record[name] for name in _JOURNAL_FIELDS if name in record}
        return msgspec.convert(journal_part, RunState)
    except msgspec.MsgspecError as exc:
        raise JournalError(f"unreadable run state snapshot: {exc}") from exc


def snapshot_of(state: RunState) -> Snapshot:
    """A snapshot of ``state`` (which has folded at least one event)."""
    return Snapshot(state.run_id, state.next_seq - 1, encode_state(state), state.status)


# Adapters -------------------------------------------------------------------------------------


class MemorySnapshotStore(SnapshotStore):
    """Snapshots in a dict."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}

    async def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        for snapshot in snapshots:
            kept = self._snapshots.get(snapshot.run_id)
            if kept is None or snapshot.seq > kept.seq:
                self._snapshots[snapshot.run_id] = snapshot

    async def load(self, run_id: str) -> Snapshot | None:
        return self._snapshots.get(run_id)

    async def load_many(self, run_ids: Iterable[str]) -> dict[str, Snapshot]:
        return {r: self._snapshots[r] for r in run_ids if r in self._snapshots}

    async def unfinished(self) -> list[Snapshot]:
        return sorted((s for s in self._snapshots.values() if not s.status.terminal),
                      key=lambda s: s.run_id)


_SQLITE_COLUMNS = "run_id, seq, state, status"


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the ``run_snapshots`` table of an :class:`SQLiteDatabase`."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._db = database

    async def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        now = int(time.time() * 1000)
        rows = [(s.run_id, s.seq, s.state, s.status.value, now) for s in snapshots]
        if not rows:
            return

        def save(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN")
            try:
                connection.executemany(
                    "INSERT INTO run_snapshots VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO "
                    "UPDATE SET seq = excluded.seq, state = excluded.state, "
                    "status = excluded.status, updated_at = excluded.updated_at "
                    "WHERE excluded.seq > run_snapshots.seq",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._db.call(save)

    async def load(self, run_id: str) -> Snapshot | None:
        rows = await self._db.call(
            lambda c: c.execute(
                f"SELECT {_SQLITE_COLUMNS} FROM run_snapshots WHERE run_id = ?", (run_id,)
            ).fetchall()
        )
        return _sqlite_snapshot(rows[0]) if rows else None

    async def load_many(self, run_ids: Iterable[str]) -> dict[str, Snapshot]:
        wanted = list(dict.fromkeys(run_ids))

        def load(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            # SQLite caps the number of parameters of a statement.
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows += connection.execute(
                    f"SELECT {_SQLITE_COLUMNS} FROM run_snapshots "
                    f"WHERE run_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            return rows

        return {str(row[0]): _sqlite_snapshot(row) for row in await self._db.call(load)}

    async def unfinished(self) -> list[Snapshot]:
        rows = await self._db.call(
            lambda c: c.execute(
                f"SELECT {_SQLITE_COLUMNS} FROM run_snapshots "
                "WHERE status IN ('pending', 'running') ORDER BY run_id"
            ).fetchall()
        )
        return [_sqlite_snapshot(row) for row in rows]


def _sqlite_snapshot(row: tuple[Any, ...]) -> Snapshot:
    return Snapshot(str(row[0]), int(row[1]), bytes(row[2]), RunStatus(str(row[3])))
