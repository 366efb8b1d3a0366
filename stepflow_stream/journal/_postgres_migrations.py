"""The Postgres schema as ordered migrations, and the code that applies them.

Version *n* is ``MIGRATIONS[n - 1]``; ``schema_migrations`` records what a database has. Each
migration runs in its own transaction together with its row in ``schema_migrations``, so a
database is always at exactly one version. Every process runs :func:`migrate` when it
connects; an advisory lock held for the whole run makes processes that start at once take
turns, and the ones that come later find nothing left to do. Migrations are append-only: a
released one is never edited, a change is a new entry.

Every name is unqualified, so the schema is the connection's ``search_path`` (``public``
unless the URL says otherwise, e.g. ``postgresql://host/db?search_path=stepflow``).
"""

from __future__ import annotations

from typing import Any

MIGRATIONS: tuple[str, ...] = (
    # 1: the journal projection, the run index and blobs.
    """
    CREATE TABLE journal (
        run_id text NOT NULL,
        seq bigint NOT NULL,
        type text NOT NULL,
        timestamp bigint NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE runs (
        run_id text PRIMARY KEY,
        flow_id text NOT NULL,
        status text NOT NULL,
        created_at bigint NOT NULL,
        finished_at bigint,
        result json,
        parent_run_id text,
        batch_id text,
        batch_index integer
    );
    CREATE INDEX runs_by_created ON runs (created_at, run_id);
    CREATE INDEX runs_by_status ON runs (status, created_at, run_id);
    CREATE TABLE blobs (
        blob_id text PRIMARY KEY,
        blob_type text NOT NULL,
        data text NOT NULL
    );
    """,
    # 2: run state snapshots, so an orchestrator folds only the events after them.
    """
    CREATE TABLE run_snapshots (
        run_id text PRIMARY KEY,
        seq bigint NOT NULL,
        state bytea NOT NULL,
        status text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX run_snapshots_unfinished ON run_snapshots (run_id)
        WHERE status IN ('pending', 'running');
    """,
    # 3: the journal offset each partition's snapshots cover (distributed runtime).
    """
    CREATE TABLE journal_checkpoints (
        topic text NOT NULL,
        partition integer NOT NULL,
        next_offset bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (topic, partition)
    );
    """,
    # 4: batches: their size, so a batch's progress is known before all its runs are indexed.
    """
    CREATE TABLE batches (
        batch_id text PRIMARY KEY,
        flow_id text NOT NULL,
        size integer NOT NULL,
        created_at bigint NOT NULL
    );
    CREATE INDEX runs_by_batch ON runs (batch_id, batch_index) WHERE batch_id IS NOT NULL;
    """,
)

# Taken per schema: databases and schemas migrate independently of each other.
_LOCK = "SELECT pg_advisory_lock(hashtext('stepflow_stream.migrations:' || current_schema()))"
_UNLOCK = (
    "SELECT pg_advisory_unlock(hashtext('stepflow_stream.migrations:' || current_schema()))"
)


async def migrate(connection: Any, migrations: tuple[str, ...] = MIGRATIONS) -> list[int]:
    """Bring the connection's schema up to the last migration; return the versions applied.

    ``connection`` is an ``asyncpg.Connection``.
    """
    await connection.execute(_LOCK)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await connection.fetchval(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        )
        applied: list[int] = []
        for version, script in enumerate(migrations[current:], start=current + 1):
            async with connection.transaction():
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", version
                )
            applied.append(version)
        return applied
    finally:
        await connection.execute(_UNLOCK)
