"""The contract every SnapshotStore adapter must pass, and the run state's snapshot encoding.

One abstract suite (``SnapshotContract``), plus what adapters that persist must do besides
(``DurableSnapshotContract``); memory, SQLite and Postgres join by a subclass that says how to
open them. Postgres runs against a real server (``postgres_schema_url``, ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from test_store_contract import PostgresStorage, timeline

from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.state import RunState, RunStatus, StepState, StepStatus, apply, fold
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.memory import MemoryJournal
from stepflow_stream.journal.postgres import PostgresDatabase, PostgresSnapshotStore
from stepflow_stream.journal.snapshots import (
    MemorySnapshotStore,
    Snapshot,
    SnapshotStore,
    SQLiteSnapshotStore,
    decode_state,
    encode_state,
    snapshot_of,
)
from stepflow_stream.journal.sqlite import SQLiteDatabase, SQLiteJournal

ALL_BYTES = bytes(range(256))


def snap(run_id: str, seq: int, state: bytes = b"", status: RunStatus = RunStatus.RUNNING
         ) -> Snapshot:
    return Snapshot(run_id, seq, state or f"{run_id}@{seq}".encode(), status)


# The store contract ---------------------------------------------------------------------------


class SnapshotContract:
    """What every SnapshotStore adapter must do. Subclasses implement :meth:`open_snapshots`."""

    def open_snapshots(self, tmp_path: Path) -> AbstractAsyncContextManager[SnapshotStore]:
        """A store on the test's storage; every call within one test opens the same data."""
        raise NotImplementedError

    @pytest.fixture
    async def snapshots(self, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
        async with self.open_snapshots(tmp_path) as snapshots:
            yield snapshots

    async def test_save_then_load(self, snapshots: SnapshotStore) -> None:
        await snapshots.save("run-1", 7, ALL_BYTES, RunStatus.RUNNING)
        assert await snapshots.load("run-1") == Snapshot("run-1", 7, ALL_BYTES,
                                                         RunStatus.RUNNING)

    async def test_load_of_a_run_without_snapshot_is_none(self, snapshots: SnapshotStore
                                                           ) -> None:
        await snapshots.save_many([snap("run-1", 3)])
        assert await snapshots.load("nobody") is None
        assert await snapshots.load_many(["nobody"]) == {}

    @pytest.mark.parametrize("state", [b"\x00", b"\xff" * 3, b"{}", bytes(2**20)],
                             ids=["nul", "ff", "json", "1MiB"])
    async def test_state_bytes_round_trip(self, snapshots: SnapshotStore, state: bytes
                                          ) -> None:
        await snapshots.save("run-1", 0, state, RunStatus.PENDING)
        loaded = await snapshots.load("run-1")
        assert loaded is not None and loaded.state == state and type(loaded.state) is bytes

    async def test_a_higher_seq_replaces_an_equal_or_lower_one_does_not(
        self, snapshots: SnapshotStore
    ) -> None:
        await snapshots.save("run-1", 5, b"five", RunStatus.RUNNING)
        await snapshots.save("run-1", 4, b"four", RunStatus.COMPLETED)
        await snapshots.save("run-1", 5, b"five again", RunStatus.FAILED)
        assert await snapshots.load("run-1") == Snapshot("run-1", 5, b"five", RunStatus.RUNNING)
        await snapshots.save("run-1", 9, b"nine", RunStatus.COMPLETED)
        assert await snapshots.load("run-1") == Snapshot("run-1", 9, b"nine",
                                                         RunStatus.COMPLETED)

    async def test_save_many_keeps_the_highest_seq_of_each_run(
        self, snapshots: SnapshotStore
    ) -> None:
        await snapshots.save_many([snap("run-1", 2), snap("run-2", 8), snap("run-1", 6),
                                   snap("run-1", 4), snap("run-2", 8, b"second eight")])
        assert await snapshots.load_many(["run-1", "run-2"]) == {
            "run-1": snap("run-1", 6), "run-2": snap("run-2", 8),
        }
        await snapshots.save_many([])
        assert (await snapshots.load("run-1")) == snap("run-1", 6)

    async def test_load_many(self, snapshots: SnapshotStore) -> None:
        await snapshots.save_many([snap(f"run-{i}", i) for i in range(10)])
        wanted = ["run-3", "nobody", "run-0", "run-9", "run-3"]
        assert await snapshots.load_many(wanted) == {
            "run-3": snap("run-3", 3), "run-0": snap("run-0", 0), "run-9": snap("run-9", 9),
        }
        assert await snapshots.load_many([]) == {}
        assert await snapshots.load_many(iter(["run-1"])) == {"run-1": snap("run-1", 1)}

    async def test_load_many_of_many_runs(self, snapshots: SnapshotStore) -> None:
        await snapshots.save_many([snap(f"run-{i:04d}", i) for i in range(1_200)])
        loaded = await snapshots.load_many(f"run-{i:04d}" for i in range(0, 1_500, 2))
        assert loaded == {f"run-{i:04d}": snap(f"run-{i:04d}", i) for i in range(0, 1_200, 2)}

    async def test_unfinished_are_the_runs_not_terminal_by_run_id(
        self, snapshots: SnapshotStore
    ) -> None:
        assert await snapshots.unfinished() == []
        await snapshots.save_many([
            snap("c", 1, status=RunStatus.RUNNING), snap("a", 1, status=RunStatus.PENDING),
            snap("b", 2, status=RunStatus.COMPLETED), snap("d", 3, status=RunStatus.FAILED),
            snap("e", 4, status=RunStatus.CANCELLED), snap("f", 5, status=RunStatus.RUNNING),
        ])
        assert [s.run_id for s in await snapshots.unfinished()] == ["a", "c", "f"]
        await snapshots.save("f", 6, b"done", RunStatus.COMPLETED)
        assert await snapshots.unfinished() == [snap("a", 1, status=RunStatus.PENDING),
                                                snap("c", 1, status=RunStatus.RUNNING)]

    async def test_concurrent_saves_keep_the_highest(self, snapshots: SnapshotStore) -> None:
        seqs = [(n * 37) % 101 for n in range(101)]
        await asyncio.gather(*(snapshots.save(f"run-{s % 5}", s, f"{s}".encode(),
                                              RunStatus.RUNNING) for s in seqs))
        loaded = await snapshots.load_many(f"run-{i}" for i in range(5))
        assert {r: s.seq for r, s in loaded.items()} == {
            f"run-{i}": max(s for s in seqs if s % 5 == i) for i in range(5)
        }

    async def test_a_folded_state_survives_save_and_load(self, snapshots: SnapshotStore
                                                         ) -> None:
        events = timeline("run-1", end="failed")
        state = fold("run-1", events[:6])
        await snapshots.save_many([snapshot_of(state)])
        loaded = await snapshots.load("run-1")
        assert loaded is not None and loaded.seq == 5 and loaded.status is RunStatus.RUNNING
        restored = decode_state(loaded.state)
        for event in events[loaded.seq + 1:]:
            apply(restored, event)
        assert restored == fold("run-1", events)


class DurableSnapshotContract(SnapshotContract):
    """What a store that persists must do besides: survive a reopen, and return from a save
    only once it is committed (visible to another connection)."""

    async def test_snapshots_survive_closing_and_reopening(self, tmp_path: Path) -> None:
        async with self.open_snapshots(tmp_path) as snapshots:
            await snapshots.save_many([snap("run-1", 4), snap("run-2", 9, ALL_BYTES)])
        async with self.open_snapshots(tmp_path) as snapshots:
            assert await snapshots.load("run-2") == snap("run-2", 9, ALL_BYTES)
            await snapshots.save("run-1", 3, b"older", RunStatus.COMPLETED)
            await snapshots.save("run-1", 5, b"newer", RunStatus.COMPLETED)
        async with self.open_snapshots(tmp_path) as snapshots:
            assert await snapshots.load("run-1") == Snapshot("run-1", 5, b"newer",
                                                             RunStatus.COMPLETED)
            assert [s.run_id for s in await snapshots.unfinished()] == ["run-2"]

    async def test_a_save_returns_only_after_commit(self, tmp_path: Path) -> None:
        async with self.open_snapshots(tmp_path) as writer, \
                self.open_snapshots(tmp_path) as reader:
            for seq in range(5):
                await writer.save("run-1", seq, f"{seq}".encode(), RunStatus.RUNNING)
                assert await reader.load("run-1") == Snapshot("run-1", seq, f"{seq}".encode(),
                                                              RunStatus.RUNNING)


class TestMemorySnapshotStore(SnapshotContract):
    @asynccontextmanager
    async def open_snapshots(self, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
        snapshots = MemorySnapshotStore()
        try:
            yield snapshots
        finally:
            await snapshots.close()


class TestSQLiteSnapshotStore(DurableSnapshotContract):
    @asynccontextmanager
    async def open_snapshots(self, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
        database = SQLiteDatabase(tmp_path / "journal.db")
        snapshots = SQLiteSnapshotStore(database)
        try:
            yield snapshots
        finally:
            await snapshots.close()
            database.close()


class TestPostgresSnapshotStore(PostgresStorage, DurableSnapshotContract):
    @asynccontextmanager
    async def open_snapshots(self, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
        database = await PostgresDatabase.connect(self.url)
        snapshots = PostgresSnapshotStore(database)
        try:
            yield snapshots
        finally:
            await snapshots.close()
            await database.close()


async def test_sqlite_snapshots_share_the_journal_database(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "journal.db")
    try:
        journal, snapshots = SQLiteJournal(database), SQLiteSnapshotStore(database)
        events = timeline("run-1")
        await journal.append(events)
        await snapshots.save_many([snapshot_of(fold("run-1", events))])
        loaded = await snapshots.load("run-1")
        assert loaded is not None
        assert decode_state(loaded.state) == fold("run-1", await journal.read("run-1"))
        await journal.close()
    finally:
        database.close()


# The state encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
def test_restoring_any_prefix_then_folding_the_rest_equals_the_fold(end: str) -> None:
    events = timeline("run-1", end=end)
    whole = fold("run-1", events)
    for k in range(len(events) + 1):
        restored = decode_state(encode_state(fold("run-1", events[:k])))
        assert restored == fold("run-1", events[:k])
        for event in events[k:]:
            apply(restored, event)
        assert restored == whole, f"restored after {k} events"


def test_only_journal_fields_are_stored_and_the_memo_starts_empty() -> None:
    state = fold("run-1", timeline("run-1")[:6])
    state.secrets = {"api_key": "s3cret"}
    state.scheduled = True
    state.waiters = {"a": {"b": None}}
    state.remaining = {"b": 1}
    data = encode_state(state)
    assert b"s3cret" not in data and b"waiters" not in data
    restored = decode_state(data)
    assert restored == state
    fresh = RunState("run-1")
    for name in ("secrets", "scheduled", "waiters", "remaining", "dirty", "settled"):
        assert getattr(restored, name) == getattr(fresh, name), name


def test_every_field_that_takes_part_in_equality_is_stored() -> None:
    """A field added to RunState or StepState is covered by snapshots without anybody
    remembering: a state with every such field set survives the round trip."""
    step = StepState(status=StepStatus.FAILED, attempt=2, task_id="t", component="/c",
                     plugin="p", input={"i": 1}, affinity="k", output=[0],
                     error=ErrorInfo("E", "m", 1),
                     retryable=True, from_default=True, reused_from="pr", skip_reason="r",
                     needed_at=1,
                     started_at=2, finished_at=3)
    state = RunState("run-1", next_seq=9, status=RunStatus.FAILED, flow_id="f",
                     input={"x": 1.0}, variables={"v": [True]}, parent_run_id="p",
                     parent_step_id="ps", batch_id="b", batch_index=0,
                     forked_from_step="fs", created_at=10,
                     finished_at=20, cancel_requested=True,
                     result=FlowResult(error=ErrorInfo("E", "m")),
                     steps={"z": step, "a": StepState()}, outputs={"z": 0, "a": None},
                     skipped={"q", "b"}, running_tasks={"t": "z"})
    assert all(_differs(state, RunState("other"), f) for f in dataclasses.fields(RunState)
               if f.compare and f.name != "run_id")
    assert all(_differs(step, StepState(), f) for f in dataclasses.fields(StepState))
    restored = decode_state(encode_state(state))
    assert restored == state
    assert list(restored.steps) == ["z", "a"] and list(restored.outputs) == ["z", "a"]
    assert type(restored.input["x"]) is float


def _differs(value: object, fresh: object, field: dataclasses.Field[object]) -> bool:
    return bool(getattr(value, field.name) != getattr(fresh, field.name))


@pytest.mark.parametrize("data", [b"", b"[]", b'{"format": 99, "run_id": "r"}',
                                  b'{"format": 1}', b'{"format": 1, "run_id": 5}', b"\xff"])
def test_an_unreadable_snapshot_is_a_journal_error(data: bytes) -> None:
    with pytest.raises(JournalError):
        decode_state(data)


async def test_memory_journal_and_snapshots_resume_a_run() -> None:
    """How an orchestrator takes a run over: the snapshot, then the events after it."""
    journal, snapshots = MemoryJournal(), MemorySnapshotStore()
    events = timeline("run-1")
    await journal.append(events)
    await snapshots.save_many([snapshot_of(fold("run-1", events[:4]))])
    snapshot = await snapshots.load("run-1")
    assert snapshot is not None
    state = decode_state(snapshot.state)
    for event in await journal.read("run-1", after_seq=snapshot.seq):
        apply(state, event)
    assert state == fold("run-1", events)
