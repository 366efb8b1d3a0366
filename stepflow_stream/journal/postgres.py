"""Postgres journal, blob store and snapshot store (asyncpg), sharing one connection pool.

The journal is written with group commit, as the SQLite one: writes that arrive while a
commit is in progress go into the next transaction together, and each table is written by one
statement over arrays (``unnest``), so a commit of any size costs a few round trips and one
WAL flush. The run index is maintained in the same transaction as the events, from the events
actually stored: a re-appended seq (kept as it was) changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec

from stepflow_stream.core.events import Event, FlowResult, RunCreated
from stepflow_stream.core.jsonvalue import JSON, compact_json, content_id
from stepflow_stream.core.state import RunStatus
from stepflow_stream.journal._postgres_migrations import migrate
from stepflow_stream.journal.base import BlobStore, Journal, RunSummary
from stepflow_stream.journal.codec import decode_event, encode_event
from stepflow_stream.journal.group_commit import GroupCommit
from stepflow_stream.journal.projection import next_summary
from stepflow_stream.journal.snapshots import Snapshot, SnapshotStore, latest_per_run

__all__ = ["PostgresBlobStore", "PostgresDatabase", "PostgresJournal", "PostgresSnapshotStore"]

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


class PostgresDatabase:
    """A connection pool on a migrated database.

    The URL is a libpq-style ``postgresql://user:password@host:port/database``; other query
    parameters are server settings, e.g. ``?search_path=stepflow`` to keep the tables in
    their own schema (which must exist).
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        """Create the URL's schema if it names one that does not exist (``search_path``),
        apply pending migrations, then open the pool."""
        connection = await asyncpg.connect(url)
        try:
            schema = _first_schema(url)
            if schema is not None:
                # Two processes creating it at once: IF NOT EXISTS does not stop the loser from
                # failing on the catalog's unique index, but the schema is there all the same.
                with contextlib.suppress(asyncpg.UniqueViolationError):
                    await connection.execute(
                        f"CREATE SCHEMA IF NOT EXISTS {_quote_identifier(schema)}"
                    )
            await migrate(connection)
        finally:
            await connection.close()
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()


def _first_schema(url: str) -> str | None:
    """The first schema of the URL's ``search_path`` setting, if it sets one."""
    values = parse_qs(urlsplit(url).query).get("search_path")
    if not values:
        return None
    first = values[0].split(",")[0].strip().strip('"')
    return first or None


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The journal ----------------------------------------------------------------------------------

_INSERT_EVENTS = """
    INSERT INTO journal (run_id, seq, type, timestamp, body)
    SELECT run_id, seq, type, timestamp, body
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bytea[])
        WITH ORDINALITY AS e(run_id, seq, type, timestamp, body, position)
    ORDER BY position
    ON CONFLICT (run_id, seq) DO NOTHING
    RETURNING run_id, seq
"""

_INSERT_RUNS = """
    INSERT INTO runs (run_id, flow_id, status, created_at, parent_run_id, batch_id, batch_index)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                         $6::text[], $7::integer[])
    ON CONFLICT (run_id) DO NOTHING
"""

# A terminal event finishes a run once: the first one stored wins.
_FINISH_RUNS = """
    UPDATE runs SET status = f.status, finished_at = f.finished_at, result = f.result::json
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
        AS f(run_id, status, finished_at, result)
    WHERE runs.run_id = f.run_id AND runs.status IN ('pending', 'running')
"""

_RUN_COLUMNS = (
    "run_id, flow_id, status, created_at, finished_at, result, parent_run_id, batch_id, "
    "batch_index"
)


class PostgresJournal(Journal):
    """The journal in a :class:`PostgresDatabase`, with group commit."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool
        self._group: GroupCommit[tuple[Event, bytes | None]] = GroupCommit(self._commit)

    def write(self, events: Sequence[Event]) -> Awaitable[None]:
        return self._group.write([(event, None) for event in events])

    def write_encoded(self, events: Sequence[tuple[Event, bytes]]) -> Awaitable[None]:
        """:meth:`write` for events whose :func:`encode_event` the caller has already (for
        Kafka): an event is encoded once however many places it goes."""
        return self._group.write(events)

    async def _commit(self, items: list[tuple[Event, bytes | None]]) -> None:
        # Encoding here, not in write(): an event that cannot be encoded fails its commit (and
        # its writers), as any other error of the commit would.
        rows = [(e.run_id, e.seq, type(e).__name__, e.timestamp,
                 encode_event(e) if body is None else body) for e, body in items]
        events = [e for e, _ in items]
        async with self._pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetch(_INSERT_EVENTS, *_columns(rows, 5))
            created, finished = _run_rows(_stored(events, {(r[0], r[1]) for r in inserted}))
            if created:
                await connection.execute(_INSERT_RUNS, *_columns(created, 7))
            if finished:
                await connection.execute(_FINISH_RUNS, *_columns(finished, 4))

    async def read(self, run_id: str, after_seq: int = -1) -> list[Event]:
        rows = await self._pool.fetch(
            "SELECT body FROM journal WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            run_id, after_seq,
        )
        return [decode_event(row[0]) for row in rows]

    async def get_run(self, run_id: str) -> RunSummary | None:
        row = await self._pool.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id
        )
        return _summary(row) if row is not None else None

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunSummary]:
        where = "WHERE status = $3" if status else ""
        args = [status.value] if status else []
        rows = await self._pool.fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs {where} "
            "ORDER BY created_at DESC, run_id DESC LIMIT $1 OFFSET $2",
            limit, offset, *args,
        )
        return [_summary(row) for row in rows]

    async def unfinished_runs(self) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT run_id FROM runs WHERE status IN ('pending', 'running') "
            "ORDER BY created_at, run_id"
        )
        return [str(row[0]) for row in rows]

    async def close(self) -> None:
        await self._group.drain()


def _stored(events: list[Event], keys: set[tuple[str, int]]) -> list[Event]:
    """The events of a batch that the insert stored: for a (run_id, seq) written twice in one
    batch, the first, as rows are inserted in batch order."""
    stored = []
    for event in events:
        key = (event.run_id, event.seq)
        if key in keys:
            keys.discard(key)
            stored.append(event)
    return stored


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as column arrays: one ``unnest`` parameter per column."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _run_rows(
    events: list[Event],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The run rows to insert and the ones to finish, as the projection derives them."""
    created: list[tuple[object, ...]] = []
    finished: list[tuple[object, ...]] = []
    finishing: set[str] = set()
    for event in events:
        if type(event) is RunCreated:
            s = next_summary(None, event)
            assert s is not None
            created.append((s.run_id, s.flow_id, s.status.value, s.created_at,
                            s.parent_run_id, s.batch_id, s.batch_index))
            continue
        # Whether the run's row exists is for the database to say: against a placeholder row,
        # the projection tells whether (and how) the event finishes a run.
        after = next_summary(RunSummary(event.run_id, "", RunStatus.RUNNING, 0), event)
        if after is None or event.run_id in finishing:
            continue
        finishing.add(event.run_id)
        assert after.result is not None
        finished.append((event.run_id, after.status.value, after.finished_at,
                         _json_encoder.encode(after.result.to_json()).decode()))
    return created, finished


def _summary(row: asyncpg.Record) -> RunSummary:
    result = row["result"]
    return RunSummary(
        run_id=row["run_id"],
        flow_id=row["flow_id"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        result=FlowResult.from_json(_json_decoder.decode(result)) if result is not None else None,
        parent_run_id=row["parent_run_id"],
        batch_id=row["batch_id"],
        batch_index=row["batch_index"],
    )


# Blobs ----------------------------------------------------------------------------------------


class PostgresBlobStore(BlobStore):
    """Blobs in the ``blobs`` table, as the compact JSON text their id is the hash of."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool

    async def put(self, data: JSON, blob_type: str = "data") -> str:
        blob_id = content_id(data)
        await self._pool.execute(
            "INSERT INTO blobs (blob_id, blob_type, data) VALUES ($1, $2, $3) "
            "ON CONFLICT (blob_id) DO NOTHING",
            blob_id, blob_type, compact_json(data),
        )
        return blob_id

    async def get(self, blob_id: str) -> JSON:
        text = await self._pool.fetchval("SELECT data FROM blobs WHERE blob_id = $1", blob_id)
        if text is None:
            raise KeyError(blob_id)
        return _json_decoder.decode(text)


# Snapshots ------------------------------------------------------------------------------------

_SAVE_SNAPSHOTS = """
    INSERT INTO run_snapshots (run_id, seq, state, status, updated_at)
    SELECT run_id, seq, state, status, now()
    FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[]) AS s(run_id, seq, state, status)
    ON CONFLICT (run_id) DO UPDATE
        SET seq = excluded.seq, state = excluded.state, status = excluded.status,
            updated_at = excluded.updated_at
        WHERE run_snapshots.seq < excluded.seq
"""


class PostgresSnapshotStore(SnapshotStore):
    """Snapshots in ``run_snapshots``, one row per run."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool

    async def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        # One statement may not update a row twice: keep each run's newest snapshot.
        latest = latest_per_run(snapshots)
        if not latest:
            return
        await self._pool.execute(
            _SAVE_SNAPSHOTS,
            [s.run_id for s in latest], [s.seq for s in latest], [s.state for s in latest],
            [s.status.value for s in latest],
        )

    async def load(self, run_id: str) -> Snapshot | None:
        row = await self._pool.fetchrow(
            "SELECT run_id, seq, state, status FROM run_snapshots WHERE run_id = $1", run_id
        )
        return _snapshot(row) if row is not None else None

    async def load_many(self, run_ids: Iterable[str]) -> dict[str, Snapshot]:
        rows = await self._pool.fetch(
            "SELECT run_id, seq, state, status FROM run_snapshots WHERE run_id = ANY($1::text[])",
            list(run_ids),
        )
        return {row["run_id"]: _snapshot(row) for row in rows}

    async def unfinished(self) -> list[Snapshot]:
        rows = await self._pool.fetch(
            "SELECT run_id, seq, state, status FROM run_snapshots "
            "WHERE status IN ('pending', 'running') ORDER BY run_id"
        )
        return [_snapshot(row) for row in rows]


def _snapshot(row: asyncpg.Record) -> Snapshot:
    return Snapshot(row["run_id"], row["seq"], bytes(row["state"]), RunStatus(row["status"]))
