"""The contract every Journal and BlobStore adapter must pass.

One abstract suite per port (``JournalContract``, ``BlobStoreContract``), plus the extra
contract of adapters that persist (``DurableJournalContract``, ``DurableBlobStoreContract``:
data survives a reopen, and an acknowledged write is visible to another connection). An
adapter joins by one subclass that says how to open it (see ``TestPostgresJournal``).

The Postgres adapters run against a real server: ``postgres_url`` (the session's server) and
``postgres_schema_url`` (an empty schema per test, ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    FlowResult,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepsNeeded,
    StepStarted,
)
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.state import RunStatus
from stepflow_stream.errors import JournalError
from stepflow_stream.journal._postgres_migrations import MIGRATIONS, migrate
from stepflow_stream.journal.base import BlobStore, Journal, RunSummary
from stepflow_stream.journal.codec import decode_event, encode_event
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.journal.postgres import PostgresBlobStore, PostgresDatabase, PostgresJournal
from stepflow_stream.journal.sqlite import SQLiteBlobStore, SQLiteDatabase, SQLiteJournal

# Events ---------------------------------------------------------------------------------------

NESTED: JSON = {
    "tëxt": "héllo wörld ✓ 😀 中文",
    "list": [1, 2.5, -3, True, False, None, "", [], {}],
    "nested": {"deep": {"deeper": [{"a": [1, {"b": None}]}]}},
    "big": 2**62,
    "zebra": 1,
    "apple": 2,
}


def created(run_id: str, timestamp: int = 1_000, **fields: Any) -> RunCreated:
    values: dict[str, Any] = {"flow_id": "flow-1", "input": {"n": 1}, "variables": {}}
    values.update(fields)
    return RunCreated(run_id=run_id, seq=0, timestamp=timestamp, **values)


def terminal(kind: str, run_id: str, seq: int, timestamp: int) -> Event:
    if kind == "completed":
        return RunCompleted(run_id, seq, timestamp, result={"answer": 42, "ü": [1]})
    if kind == "failed":
        return RunFailed(run_id, seq, timestamp,
                         error=ErrorInfo("COMPONENT_FAILED", "boom", data={"why": "x"}))
    assert kind == "cancelled"
    return RunCancelled(run_id, seq, timestamp, reason="user asked")


def expected_result(kind: str) -> FlowResult:
    if kind == "completed":
        return FlowResult(result={"answer": 42, "ü": [1]})
    if kind == "failed":
        return FlowResult(error=ErrorInfo("COMPONENT_FAILED", "boom", data={"why": "x"}))
    return FlowResult(error=ErrorInfo("CANCELLED", "user asked"))


def timeline(run_id: str, start: int = 1_000, end: str = "completed") -> list[Event]:
    """A run's events with every non-terminal event type, ending with ``end``."""
    return [
        created(run_id, start, input=NESTED, variables={"model": "small", "k": [1, 2]},
                parent_run_id="parent-1", parent_step_id="step-p", batch_id="batch-1",
                batch_index=7),
        StepsNeeded(run_id, 1, start + 1, step_ids=("a", "b", "c")),
        StepStarted(run_id, 2, start + 2, step_id="a", task_id=f"{run_id}/a/1", attempt=1,
                    component="/eval", plugin="builtin", input={"x": NESTED}),
        StepFailed(run_id, 3, start + 3, step_id="a", task_id=f"{run_id}/a/1", attempt=1,
                   error=ErrorInfo("TIMEOUT", "too slow ⏱", data=[1, {"d": None}]),
                   retryable=True),
        StepStarted(run_id, 4, start + 4, step_id="a", task_id=f"{run_id}/a/2", attempt=2,
                    component="/eval", plugin="builtin", input={"x": 1}),
        StepCompleted(run_id, 5, start + 5, step_id="a", task_id=f"{run_id}/a/2",
                      output=NESTED),
        StepCompleted(run_id, 6, start + 6, step_id="b", task_id=f"{run_id}/b/1",
                      output=None, from_default=True),
        StepSkipped(run_id, 7, start + 7, step_id="c", reason="skip condition was true"),
        RunCancelRequested(run_id, 8, start + 8, reason="please stop"),
        terminal(end, run_id, 9, start + 9),
    ]


def compact_sha256(value: JSON) -> str:
    """Stepflow's blob id, computed here independently of the code under test."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# The journal contract -------------------------------------------------------------------------


class JournalContract:
    """What every Journal adapter must do. Subclasses implement :meth:`open_journal`."""

    def open_journal(self, tmp_path: Path) -> AbstractAsyncContextManager[Journal]:
        """A journal on the test's storage; every call within one test opens the same data."""
        raise NotImplementedError

    @pytest.fixture
    async def journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        async with self.open_journal(tmp_path) as journal:
            yield journal

    # Appending and reading -------------------------------------------------------------------

    async def test_append_then_read_returns_every_event_type_equal_and_in_seq_order(
        self, journal: Journal
    ) -> None:
        events = timeline("run-1")
        await journal.append(events[:1])
        await journal.append(events[1:4])
        await journal.write(events[4:])
        assert await journal.read("run-1") == events

    async def test_read_after_seq(self, journal: Journal) -> None:
        events = timeline("run-1")
        await journal.append(events)
        assert await journal.read("run-1", after_seq=-1) == events
        assert await journal.read("run-1", after_seq=0) == events[1:]
        assert await journal.read("run-1", after_seq=4) == events[5:]
        assert [e.seq for e in await journal.read("run-1", after_seq=7)] == [8, 9]
        assert await journal.read("run-1", after_seq=9) == []
        assert await journal.read("run-1", after_seq=100) == []

    async def test_read_of_an_unknown_run_is_empty(self, journal: Journal) -> None:
        await journal.append(timeline("run-1"))
        assert await journal.read("nobody") == []
        assert await journal.read("nobody", after_seq=3) == []

    async def test_runs_do_not_mix(self, journal: Journal) -> None:
        one, two = timeline("run-1", 1_000), timeline("run-2", 2_000, end="failed")
        await journal.append([e for pair in zip(one, two, strict=True) for e in pair])
        assert await journal.read("run-1") == one
        assert await journal.read("run-2") == two

    async def test_reappending_a_stored_seq_keeps_the_original(self, journal: Journal) -> None:
        original = created("run-1", 1_000, input={"v": "original"})
        await journal.append([original])
        await journal.append([created("run-1", 9_999, flow_id="other", input={"v": "new"})])
        second = StepsNeeded("run-1", 1, 1_001, step_ids=("a",))
        await journal.append([second, StepsNeeded("run-1", 1, 1_002, step_ids=("zzz",))])
        assert await journal.read("run-1") == [original, second]
        summary = await journal.get_run("run-1")
        assert summary is not None
        assert (summary.flow_id, summary.created_at) == ("flow-1", 1_000)

    async def test_replaying_a_whole_write_is_harmless(self, journal: Journal) -> None:
        events = timeline("run-1")
        await journal.append(events)
        await journal.append(events)
        await journal.append(events[3:6])
        assert await journal.read("run-1") == events
        assert len(await journal.list_runs()) == 1

    async def test_reappending_a_terminal_seq_keeps_the_original_run_row(
        self, journal: Journal
    ) -> None:
        """The run index follows the stored events: a replayed terminal event with other
        content (a retried write after a crash) must not rewrite status, result or time."""
        await journal.append([created("run-1", 1_000),
                              RunCompleted("run-1", 1, 2_000, result="first")])
        await journal.append([RunFailed("run-1", 1, 3_000, error=ErrorInfo("X", "second"))])
        await journal.append([RunCompleted("run-1", 1, 4_000, result="third")])
        assert [type(e) for e in await journal.read("run-1")] == [RunCreated, RunCompleted]
        assert await journal.get_run("run-1") == RunSummary(
            "run-1", "flow-1", RunStatus.COMPLETED, 1_000, finished_at=2_000,
            result=FlowResult(result="first"),
        )

    async def test_a_terminal_event_on_a_seq_stored_already_does_not_finish_the_run(
        self, journal: Journal
    ) -> None:
        """The event is not stored, so the run index must not say the run ended: the run would
        drop out of ``unfinished_runs`` and never be resumed."""
        await journal.append([created("run-1", 1_000), StepsNeeded("run-1", 1, 1_001,
                                                                   step_ids=("a",))])
        await journal.append([RunCompleted("run-1", 1, 2_000, result="not stored")])
        assert [type(e) for e in await journal.read("run-1")] == [RunCreated, StepsNeeded]
        summary = await journal.get_run("run-1")
        assert summary is not None
        assert (summary.status, summary.finished_at, summary.result) == (
            RunStatus.RUNNING, None, None)
        assert await journal.unfinished_runs() == ["run-1"]

    async def test_events_are_addressed_by_seq(self, journal: Journal) -> None:
        """``read`` returns events "with seq > after_seq": an adapter either refuses a write
        that leaves a gap in seq (JournalError) or stores and filters by seq, not position."""
        first, third = created("run-1"), StepsNeeded("run-1", 2, 1_002, step_ids=("a",))
        await journal.append([first])
        try:
            await journal.append([third])
        except JournalError:
            assert await journal.read("run-1") == [first]
            return
        assert await journal.read("run-1") == [first, third]
        assert await journal.read("run-1", after_seq=1) == [third]
        assert await journal.read("run-1", after_seq=2) == []

    async def test_many_concurrent_writers_are_all_durable_and_ordered_per_run(
        self, journal: Journal
    ) -> None:
        """200 writers share 20 runs; each takes the run's next seq and writes it in the same
        step, so the call order is the seq order that every run must read back."""
        runs = [f"run-{i:02d}" for i in range(20)]
        await journal.append([created(run_id, 1_000 + i) for i, run_id in enumerate(runs)])
        next_seq = dict.fromkeys(runs, 1)
        written: dict[str, list[Event]] = {run_id: [] for run_id in runs}

        async def writer(number: int) -> None:
            run_id = runs[number % len(runs)]
            for round_ in range(3):
                seq = next_seq[run_id]
                next_seq[run_id] += 1
                event = StepsNeeded(run_id, seq, 2_000 + seq, step_ids=(f"w{number}-{round_}",))
                written[run_id].append(event)
                awaitable = journal.write([event])
                if round_ == 1:
                    await asyncio.sleep(0)
                await awaitable

        await asyncio.gather(*(writer(n) for n in range(200)))
        for run_id in runs:
            events = await journal.read(run_id)
            assert events[1:] == written[run_id]
            assert [e.seq for e in events] == list(range(31))

    async def test_one_cancelled_waiter_does_not_fail_the_other_writers(
        self, journal: Journal
    ) -> None:
        """Writers that share a commit must not share a cancellation: cancelling one task that
        awaits its write must neither fail another writer nor lose any event."""

        async def wait_for(awaitable: Any) -> None:
            await awaitable

        cancelled = asyncio.create_task(wait_for(journal.write([created("run-a")])))
        other = journal.write([created("run-b")])
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait_for(other, 1)
        assert len(await journal.read("run-a")) == 1
        assert len(await journal.read("run-b")) == 1

    async def test_a_cancelled_waiter_does_not_strand_later_writes(
        self, journal: Journal
    ) -> None:
        """A waiter cancelled while its commit is in progress: writes made meanwhile must still
        be committed and acknowledged."""

        async def wait_for(awaitable: Any) -> None:
            await awaitable

        first = asyncio.create_task(wait_for(journal.write([created("run-a")])))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        later = journal.write([created("run-b")])
        first.cancel()
        await asyncio.wait_for(later, 1)
        await asyncio.wait_for(journal.append([created("run-c")]), 1)
        assert [len(await journal.read(r)) for r in ("run-a", "run-b", "run-c")] == [1, 1, 1]

    # The run index ----------------------------------------------------------------------------

    async def test_get_run_of_an_unknown_run_is_none(self, journal: Journal) -> None:
        assert await journal.get_run("nobody") is None
        await journal.append(timeline("run-1"))
        assert await journal.get_run("nobody") is None

    async def test_run_created_makes_a_running_row(self, journal: Journal) -> None:
        await journal.append(timeline("run-1", 5_000)[:4])
        assert await journal.get_run("run-1") == RunSummary(
            run_id="run-1", flow_id="flow-1", status=RunStatus.RUNNING, created_at=5_000,
            finished_at=None, result=None, parent_run_id="parent-1", batch_id="batch-1",
            batch_index=7,
        )

    @pytest.mark.parametrize(
        ("end", "status"),
        [("completed", RunStatus.COMPLETED), ("failed", RunStatus.FAILED),
         ("cancelled", RunStatus.CANCELLED)],
    )
    async def test_a_terminal_event_sets_status_result_and_finished_at(
        self, journal: Journal, end: str, status: RunStatus
    ) -> None:
        events = timeline("run-1", 5_000, end=end)
        await journal.append(events[:-1])
        await journal.append(events[-1:])
        assert await journal.get_run("run-1") == RunSummary(
            run_id="run-1", flow_id="flow-1", status=status, created_at=5_000,
            finished_at=5_009, result=expected_result(end), parent_run_id="parent-1",
            batch_id="batch-1", batch_index=7,
        )

    async def test_created_and_terminal_in_one_write(self, journal: Journal) -> None:
        await journal.append([created("run-1", 10), RunFailed("run-1", 1, 25,
                                                            error=ErrorInfo("E", "m"))])
        summary = await journal.get_run("run-1")
        assert summary is not None
        assert (summary.status, summary.finished_at) == (RunStatus.FAILED, 25)
        assert summary.result == FlowResult(error=ErrorInfo("E", "m"))

    async def test_a_cancelled_run_without_reason_has_a_cancelled_error(
        self, journal: Journal
    ) -> None:
        await journal.append([created("run-1"), RunCancelled("run-1", 1, 1_001)])
        summary = await journal.get_run("run-1")
        assert summary is not None and summary.result is not None
        assert summary.status is RunStatus.CANCELLED
        assert summary.result.error is not None and summary.result.error.code == "CANCELLED"

    async def _runs_for_listing(self, journal: Journal) -> None:
        # created_at: r1 < r2 < (r3 == r4) < r5; r3 and r4 tie and are ordered by run id.
        await journal.append([created("r1", 1_000), created("r2", 2_000),
                              created("r3", 3_000), created("r4", 3_000),
                              created("r5", 5_000)])
        await journal.append([RunCompleted("r1", 1, 1_500, result=1),
                              RunFailed("r3", 1, 3_500, error=ErrorInfo("E", "bad")),
                              RunCompleted("r5", 1, 5_500, result=5)])

    async def test_list_runs_is_newest_first(self, journal: Journal) -> None:
        await self._runs_for_listing(journal)
        runs = await journal.list_runs()
        assert [r.run_id for r in runs] == ["r5", "r4", "r3", "r2", "r1"]
        assert runs[0] == await journal.get_run("r5")
        assert [r.status for r in runs] == [RunStatus.COMPLETED, RunStatus.RUNNING,
                                            RunStatus.FAILED, RunStatus.RUNNING,
                                            RunStatus.COMPLETED]

    async def test_list_runs_filters_by_status(self, journal: Journal) -> None:
        await self._runs_for_listing(journal)
        by_status = {status: [r.run_id for r in await journal.list_runs(status=status)]
                     for status in RunStatus}
        assert by_status == {
            RunStatus.PENDING: [],
            RunStatus.RUNNING: ["r4", "r2"],
            RunStatus.COMPLETED: ["r5", "r1"],
            RunStatus.FAILED: ["r3"],
            RunStatus.CANCELLED: [],
        }

    async def test_list_runs_pages(self, journal: Journal) -> None:
        await self._runs_for_listing(journal)
        pages = [[r.run_id for r in await journal.list_runs(limit=2, offset=offset)]
                 for offset in (0, 2, 4, 6)]
        assert pages == [["r5", "r4"], ["r3", "r2"], ["r1"], []]
        assert [r.run_id for r in await journal.list_runs(
            status=RunStatus.COMPLETED, limit=1, offset=1)] == ["r1"]
        assert await journal.list_runs(limit=0) == []

    async def test_list_runs_defaults_to_50(self, journal: Journal) -> None:
        await journal.append([created(f"run-{i:03d}", 1_000 + i) for i in range(60)])
        runs = await journal.list_runs()
        assert [r.run_id for r in runs] == [f"run-{i:03d}" for i in range(59, 9, -1)]

    async def test_list_runs_of_an_empty_journal(self, journal: Journal) -> None:
        assert await journal.list_runs() == []
        assert await journal.unfinished_runs() == []

    async def test_unfinished_runs_are_oldest_first_without_terminal_ones(
        self, journal: Journal
    ) -> None:
        await self._runs_for_listing(journal)
        await journal.append([created("r0", 500), RunCancelled("r4", 1, 3_600)])
        assert await journal.unfinished_runs() == ["r0", "r2"]


class DurableJournalContract(JournalContract):
    """What a journal that persists must do besides: survive a reopen, and acknowledge a
    write only once it is committed (visible to another connection)."""

    async def test_data_survives_closing_and_reopening(self, tmp_path: Path) -> None:
        one, two = timeline("run-1", 1_000), timeline("run-2", 2_000, end="failed")
        async with self.open_journal(tmp_path) as journal:
            await journal.append(one)
            await journal.append(two[:5])
        async with self.open_journal(tmp_path) as journal:
            assert await journal.read("run-1") == one
            assert await journal.read("run-2") == two[:5]
            assert [r.run_id for r in await journal.list_runs()] == ["run-2", "run-1"]
            assert await journal.unfinished_runs() == ["run-2"]
            summary = await journal.get_run("run-1")
            assert summary is not None and summary.result == expected_result("completed")
            await journal.append(two[5:])
        async with self.open_journal(tmp_path) as journal:
            assert await journal.read("run-2") == two
            assert await journal.unfinished_runs() == []

    async def test_writes_not_awaited_are_flushed_by_close(self, tmp_path: Path) -> None:
        events = timeline("run-1")
        async with self.open_journal(tmp_path) as journal:
            for event in events:
                journal.write([event])
            await journal.close()
        async with self.open_journal(tmp_path) as journal:
            assert await journal.read("run-1") == events

    async def test_a_write_completes_only_after_commit(self, tmp_path: Path) -> None:
        """Right after each writer's awaitable completes, another connection sees its events
        and its run row (checked for many writers sharing group commits)."""
        async with self.open_journal(tmp_path) as writer, \
                self.open_journal(tmp_path) as reader:

            async def write_and_check(number: int) -> None:
                run_id = f"run-{number:03d}"
                events = timeline(run_id, 1_000 + number)
                awaitable = writer.write(events)
                await awaitable
                assert await reader.read(run_id) == events
                summary = await reader.get_run(run_id)
                assert summary is not None and summary.status is RunStatus.COMPLETED

            await asyncio.gather(*(write_and_check(n) for n in range(50)))


class TestMemoryJournal(JournalContract):
    @asynccontextmanager
    async def open_journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        journal = MemoryJournal()
        try:
            yield journal
        finally:
            await journal.close()


class TestSQLiteJournal(DurableJournalContract):
    @asynccontextmanager
    async def open_journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        database = SQLiteDatabase(tmp_path / "journal.db")
        journal = SQLiteJournal(database)
        try:
            yield journal
        finally:
            await journal.close()
            database.close()


# The blob store contract ----------------------------------------------------------------------

BLOB_VALUES: list[JSON] = [
    NESTED,
    {"b": 1, "a": 2},
    "plain text with ünïcödé, emoji 😀 and a quote \" and a backslash \\",
    [1, 2.5, "x", None, True, [], {}],
    {"flow": {"steps": [{"id": "s", "input": {"$input": "$"}}], "output": {"$step": "s"}}},
    0,
    1.5,
    None,
    "",
]


class BlobStoreContract:
    """What every BlobStore adapter must do. Subclasses implement :meth:`open_blobs`."""

    def open_blobs(self, tmp_path: Path) -> AbstractAsyncContextManager[BlobStore]:
        """A blob store on the test's storage; every call within one test opens the same
        data."""
        raise NotImplementedError

    @pytest.fixture
    async def blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        async with self.open_blobs(tmp_path) as blobs:
            yield blobs

    @pytest.mark.parametrize("value", BLOB_VALUES, ids=range(len(BLOB_VALUES)))
    async def test_put_then_get_round_trips(self, blobs: BlobStore, value: JSON) -> None:
        blob_id = await blobs.put(value)
        got = await blobs.get(blob_id)
        assert got == value
        assert json.dumps(got, ensure_ascii=False) == json.dumps(value, ensure_ascii=False)

    @pytest.mark.parametrize("value", BLOB_VALUES, ids=range(len(BLOB_VALUES)))
    async def test_blob_id_is_sha256_of_compact_json(self, blobs: BlobStore,
                                                     value: JSON) -> None:
        assert await blobs.put(value) == compact_sha256(value)

    async def test_known_blob_id(self, blobs: BlobStore) -> None:
        # sha256 of the bytes {"b":1,"a":"é"}: keys in document order, UTF-8 unescaped.
        expected = hashlib.sha256('{"b":1,"a":"é"}'.encode()).hexdigest()
        assert await blobs.put({"b": 1, "a": "é"}) == expected
        assert await blobs.put({"a": "é", "b": 1}) != expected

    async def test_storing_again_is_harmless(self, blobs: BlobStore) -> None:
        first = await blobs.put(NESTED, "data")
        assert await blobs.put(NESTED, "data") == first
        assert await blobs.put(NESTED, "flow") == first
        assert await blobs.get(first) == NESTED

    async def test_flow_blobs(self, blobs: BlobStore) -> None:
        flow = BLOB_VALUES[4]
        blob_id = await blobs.put(flow, "flow")
        assert blob_id == compact_sha256(flow)
        assert await blobs.get(blob_id) == flow

    async def test_distinct_values_have_distinct_ids(self, blobs: BlobStore) -> None:
        ids = [await blobs.put(v) for v in BLOB_VALUES]
        assert len(set(ids)) == len(BLOB_VALUES)
        assert [await blobs.get(i) for i in ids] == BLOB_VALUES

    @pytest.mark.parametrize("blob_id", ["0" * 64, compact_sha256("never stored"), "", "x"])
    async def test_a_missing_blob_raises_key_error(self, blobs: BlobStore, blob_id: str) -> None:
        await blobs.put({"something": "else"})
        with pytest.raises(KeyError):
            await blobs.get(blob_id)

    async def test_stored_values_are_immutable(self, blobs: BlobStore) -> None:
        """A blob is content-addressed: changing the value that was put, or a value that was
        got, must not change what its id returns."""
        value: Any = {"items": [1, 2], "meta": {"k": "v"}}
        blob_id = await blobs.put(value)
        value["items"].append(3)
        value["meta"]["k"] = "changed"
        got: Any = await blobs.get(blob_id)
        assert got == {"items": [1, 2], "meta": {"k": "v"}}
        got["items"].clear()
        assert await blobs.get(blob_id) == {"items": [1, 2], "meta": {"k": "v"}}

    async def test_concurrent_puts(self, blobs: BlobStore) -> None:
        values = [{"n": n, "text": "ü" * (n % 7)} for n in range(200)]
        ids = await asyncio.gather(*(blobs.put(v) for v in values))
        assert list(ids) == [compact_sha256(v) for v in values]
        assert list(await asyncio.gather(*(blobs.get(i) for i in ids))) == values


class DurableBlobStoreContract(BlobStoreContract):
    """What a blob store that persists must do besides."""

    async def test_blobs_survive_closing_and_reopening(self, tmp_path: Path) -> None:
        async with self.open_blobs(tmp_path) as blobs:
            ids = [await blobs.put(v) for v in BLOB_VALUES]
        async with self.open_blobs(tmp_path) as blobs:
            assert [await blobs.get(i) for i in ids] == BLOB_VALUES

    async def test_a_put_completes_only_after_commit(self, tmp_path: Path) -> None:
        async with self.open_blobs(tmp_path) as writer, self.open_blobs(tmp_path) as reader:
            for value in BLOB_VALUES:
                blob_id = await writer.put(value)
                assert await reader.get(blob_id) == value


class TestMemoryBlobStore(BlobStoreContract):
    @asynccontextmanager
    async def open_blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        blobs = MemoryBlobStore()
        try:
            yield blobs
        finally:
            await blobs.close()


class TestSQLiteBlobStore(DurableBlobStoreContract):
    @asynccontextmanager
    async def open_blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        database = SQLiteDatabase(tmp_path / "journal.db")
        blobs = SQLiteBlobStore(database)
        try:
            yield blobs
        finally:
            await blobs.close()
            database.close()


# SQLite specifics -----------------------------------------------------------------------------


class TestSQLiteSharedDatabase:
    """The SQLite journal and blob store share one database file."""

    async def test_journal_and_blobs_in_one_file(self, tmp_path: Path) -> None:
        database = SQLiteDatabase(tmp_path / "journal.db")
        journal, blobs = SQLiteJournal(database), SQLiteBlobStore(database)
        events = timeline("run-1")
        await journal.append(events)
        blob_id = await blobs.put(NESTED)
        await journal.close()
        database.close()
        reopened = SQLiteDatabase(tmp_path / "journal.db")
        try:
            assert await SQLiteJournal(reopened).read("run-1") == events
            assert await SQLiteBlobStore(reopened).get(blob_id) == NESTED
        finally:
            reopened.close()

    @pytest.mark.parametrize("synchronous", ["OFF", "NORMAL", "FULL"])
    async def test_every_synchronous_mode_round_trips(
        self, tmp_path: Path, synchronous: Any
    ) -> None:
        database = SQLiteDatabase(tmp_path / "journal.db", synchronous=synchronous)
        journal = SQLiteJournal(database)
        try:
            await journal.append(timeline("run-1"))
            assert await journal.read("run-1") == timeline("run-1")
        finally:
            await journal.close()
            database.close()


# Postgres -------------------------------------------------------------------------------------


class PostgresStorage:
    """A test's Postgres storage: its own schema, the same for every open within the test."""

    url: str

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_schema_url: str) -> None:
        self.url = postgres_schema_url


class TestPostgresJournal(PostgresStorage, DurableJournalContract):
    @asynccontextmanager
    async def open_journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        database = await PostgresDatabase.connect(self.url)
        journal = PostgresJournal(database)
        try:
            yield journal
        finally:
            await journal.close()
            await database.close()


class TestPostgresBlobStore(PostgresStorage, DurableBlobStoreContract):
    @asynccontextmanager
    async def open_blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        database = await PostgresDatabase.connect(self.url)
        blobs = PostgresBlobStore(database)
        try:
            yield blobs
        finally:
            await blobs.close()
            await database.close()


class TestPostgresTables:
    """What other programs (SSE resume, replay, run queries) read straight from the tables."""

    async def test_the_journal_table_holds_the_avro_encoded_events(
        self, postgres_schema_url: str
    ) -> None:
        database = await PostgresDatabase.connect(postgres_schema_url)
        try:
            events = timeline("run-1")
            await PostgresJournal(database).append(events)
            rows = await database.pool.fetch(
                "SELECT run_id, seq, type, timestamp, body FROM journal ORDER BY seq"
            )
            assert [(r["run_id"], r["seq"], r["type"], r["timestamp"]) for r in rows] == [
                (e.run_id, e.seq, type(e).__name__, e.timestamp) for e in events
            ]
            assert [decode_event(r["body"]) for r in rows] == events
            run = await database.pool.fetchrow("SELECT status, result::text FROM runs")
            assert run is not None
            assert run["status"] == "completed"
            assert json.loads(run["result"]) == expected_result("completed").to_json()
        finally:
            await database.close()

    async def test_events_written_encoded_are_stored_with_the_given_bytes(
        self, postgres_schema_url: str
    ) -> None:
        database = await PostgresDatabase.connect(postgres_schema_url)
        journal = PostgresJournal(database)
        try:
            events = timeline("run-1")
            bodies = [encode_event(e) for e in events]
            await journal.write_encoded(list(zip(events, bodies, strict=True)))
            rows = await database.pool.fetch("SELECT body FROM journal ORDER BY seq")
            assert [bytes(r["body"]) for r in rows] == bodies
            assert await journal.read("run-1") == events
            summary = await journal.get_run("run-1")
            assert summary is not None and summary.status is RunStatus.COMPLETED
        finally:
            await journal.close()
            await database.close()

    async def test_a_batch_that_cannot_be_encoded_fails_and_later_writes_go_on(
        self, postgres_schema_url: str
    ) -> None:
        database = await PostgresDatabase.connect(postgres_schema_url)
        journal = PostgresJournal(database)
        try:
            bad = journal.write([created("run-bad", input={"not json": object()})])
            with pytest.raises(JournalError):
                await bad
            await journal.append([created("run-good")])
            assert await journal.read("run-bad") == []
            assert len(await journal.read("run-good")) == 1
        finally:
            await journal.close()
            await database.close()


class TestPostgresMigrations:
    async def test_a_new_schema_gets_every_migration_once(
        self, postgres_schema_url: str
    ) -> None:
        for _ in range(2):
            database = await PostgresDatabase.connect(postgres_schema_url)
            await database.close()
        connection = await asyncpg.connect(postgres_schema_url)
        try:
            versions = await connection.fetch("SELECT version FROM schema_migrations")
            assert sorted(r["version"] for r in versions) == list(range(1, len(MIGRATIONS) + 1))
            tables = await connection.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
            assert {r["table_name"] for r in tables} == {
                "schema_migrations", "journal", "runs", "blobs", "run_snapshots",
                "journal_checkpoints", "batches",
            }
        finally:
            await connection.close()

    async def test_processes_starting_at_once_do_not_race(
        self, postgres_schema_url: str
    ) -> None:
        databases = await asyncio.gather(
            *(PostgresDatabase.connect(postgres_schema_url) for _ in range(8))
        )
        try:
            journals = [PostgresJournal(d) for d in databases]
            await asyncio.gather(*(j.append([created(f"run-{i}")])
                                   for i, j in enumerate(journals)))
            assert len(await journals[0].list_runs()) == 8
            count = await databases[0].pool.fetchval(
                "SELECT count(*) FROM schema_migrations"
            )
            assert count == len(MIGRATIONS)
        finally:
            await asyncio.gather(*(d.close() for d in databases))

    async def test_only_new_migrations_run_and_a_failing_one_changes_nothing(
        self, postgres_schema_url: str
    ) -> None:
        connection = await asyncpg.connect(postgres_schema_url)
        try:
            assert await migrate(connection) == list(range(1, len(MIGRATIONS) + 1))
            failing = (*MIGRATIONS, "CREATE TABLE extra (x integer); SELECT 1 / 0;")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await migrate(connection, failing)
            assert await connection.fetchval("SELECT to_regclass('extra')") is None
            later = (*MIGRATIONS, "CREATE TABLE extra (x integer);")
            assert await migrate(connection, later) == [len(MIGRATIONS) + 1]
            assert await migrate(connection, later) == []
            assert await connection.fetchval("SELECT to_regclass('extra')::text") == "extra"
        finally:
            await connection.close()
