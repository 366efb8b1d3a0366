"""SQLite journal and blob store: one database file in WAL mode, written with group commit.

All database work runs on one dedicated thread, so the event loop never blocks on a commit or
an fsync. Writes that arrive while a commit is in progress are collected and committed
together in the next transaction: one fsync serves every run that wrote meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from stepflow_stream.core.events import (
    Event,
    FlowResult,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
)
from stepflow_stream.core.jsonvalue import JSON, compact_json, content_id
from stepflow_stream.core.state import RunStatus
from stepflow_stream.journal.base import BlobStore, Journal, RunSummary
from stepflow_stream.journal.codec import decode_event, encode_event
from stepflow_stream.journal.group_commit import GroupCommit
from stepflow_stream.journal.projection import next_summary

Synchronous = Literal["OFF", "NORMAL", "FULL"]
T = TypeVar("T")

_MIGRATIONS = (
    """
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        result TEXT,
        parent_run_id TEXT,
        batch_id TEXT,
        batch_index INTEGER
    );
    CREATE INDEX runs_by_created ON runs (created_at);
    CREATE INDEX runs_unfinished ON runs (status, created_at);
    CREATE TABLE blobs (
        blob_id TEXT PRIMARY KEY,
        blob_type TEXT NOT NULL,
        data TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # Run state snapshots (journal/snapshots.py); updated_at in milliseconds since the epoch.
    """
    CREATE TABLE run_snapshots (
        run_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        state BLOB NOT NULL,
        status TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)

_TERMINAL = {
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunCancelled: RunStatus.CANCELLED,
}


class SQLiteDatabase:
    """The database file, its migrations and the one thread that touches it.

    ``synchronous=FULL`` (the default) fsyncs the WAL at every commit, so an acknowledged
    write survives a power cut; ``NORMAL`` survives a process crash but may lose the last
    commits on power loss.
    """

    def __init__(self, path: Path | str, *, synchronous: Synchronous = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection = self._executor.submit(self._open, synchronous).result()

    def _open(self, synchronous: Synchronous) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("PRAGMA busy_timeout=10000")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        return connection

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._connection)

    def close(self) -> None:
        self._executor.submit(self._connection.close).result()
        self._executor.shutdown(wait=True)


class SQLiteJournal(Journal):
    """The journal in an :class:`SQLiteDatabase`, with group commit."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._db = database
        self._group: GroupCommit[Event] = GroupCommit(self._commit)

    def write(self, events: Sequence[Event]) -> Awaitable[None]:
        return self._group.write(events)

    async def _commit(self, events: list[Event]) -> None:
        await self._db.call(functools.partial(_commit, events=events))

    async def read(self, run_id: str, after_seq: int = -1) -> list[Event]:
        rows = await self._db.call(
            lambda c: c.execute(
                "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
        )
        return [decode_event(row[0]) for row in rows]

    async def get_run(self, run_id: str) -> RunSummary | None:
        rows = await self._db.call(
            lambda c: c.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?",
                                (run_id,)).fetchall()
        )
        return _summary(rows[0]) if rows else None

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunSummary]:
        where, args = ("WHERE status = ?", [status.value]) if status else ("", [])
        sql = (f"SELECT {_RUN_COLUMNS} FROM runs {where} "
               "ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?")
        rows = await self._db.call(lambda c: c.execute(sql, (*args, limit, offset)).fetchall())
        return [_summary(row) for row in rows]

    async def unfinished_runs(self) -> list[str]:
        rows = await self._db.call(
            lambda c: c.execute(
                "SELECT run_id FROM runs WHERE status IN ('pending', 'running') "
                "ORDER BY created_at, run_id"
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def close(self) -> None:
        await self._group.drain()


_RUN_COLUMNS = (
    "run_id, flow_id, status, created_at, finished_at, result, parent_run_id, batch_id, "
    "batch_index"
)


def _summary(row: tuple[object, ...]) -> RunSummary:
    result = FlowResult.from_json(json.loads(str(row[5]))) if row[5] is not None else None
    return RunSummary(
        run_id=str(row[0]),
        flow_id=str(row[1]),
        status=RunStatus(str(row[2])),
        created_at=int(str(row[3])),
        finished_at=int(str(row[4])) if row[4] is not None else None,
        result=result,
        parent_run_id=str(row[6]) if row[6] is not None else None,
        batch_id=str(row[7]) if row[7] is not None else None,
        batch_index=int(str(row[8])) if row[8] is not None else None,
    )


def _commit(connection: sqlite3.Connection, events: list[Event]) -> None:
    rows = [
        (e.run_id, e.seq, type(e).__name__, e.timestamp, encode_event(e)) for e in events
    ]
    created: list[tuple[object, ...]] = []
    finished: list[tuple[object, ...]] = []
    for event in events:
        kind = type(event)
        if kind is RunCreated:
            summary = next_summary(None, event)
            assert summary is not None
            created.append((summary.run_id, summary.flow_id, summary.status.value,
                            summary.created_at, summary.parent_run_id, summary.batch_id,
                            summary.batch_index))
        elif kind in _TERMINAL:
            result = _result_of(event)
            finished.append((_TERMINAL[kind].value, event.timestamp,
                             compact_json(result.to_json()), event.run_id,
                             event.run_id, event.seq, kind.__name__))
    connection.execute("BEGIN")
    try:
        connection.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", rows)
        if created:
            connection.executemany(
                "INSERT OR IGNORE INTO runs (run_id, flow_id, status, created_at, parent_run_id,"
                " batch_id, batch_index) VALUES (?, ?, ?, ?, ?, ?, ?)",
                created,
            )
        if finished:
            connection.executemany(
                # Only from the event the journal holds at that seq: a replayed write whose
                # seq was taken by another event must not finish the run.
                "UPDATE runs SET status = ?, finished_at = ?, result = ? "
                "WHERE run_id = ? AND status IN ('pending', 'running') AND EXISTS ("
                "SELECT 1 FROM events WHERE run_id = ? AND seq = ? AND type = ?)",
                finished,
            )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _result_of(event: Event) -> FlowResult:
    placeholder = RunSummary(event.run_id, "", RunStatus.RUNNING, 0)
    summary = next_summary(placeholder, event)
    assert summary is not None and summary.result is not None
    return summary.result


class SQLiteBlobStore(BlobStore):
    """Blobs in the same database as the journal."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._db = database

    async def put(self, data: JSON, blob_type: str = "data") -> str:
        blob_id = content_id(data)
        text = compact_json(data)
        await self._db.call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)", (blob_id, blob_type, text)
            )
        )
        return blob_id

    async def get(self, blob_id: str) -> JSON:
        rows = await self._db.call(
            lambda c: c.execute("SELECT data FROM blobs WHERE blob_id = ?", (blob_id,)).fetchall()
        )
        if not rows:
            raise KeyError(blob_id)
        return json.loads(rows[0][0])
