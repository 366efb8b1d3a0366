"""Topic ingest: one run per record of an input topic, its result on an output topic.

The :class:`Ingestor` is what both drivers of ``agents/ingest.py`` feed (as the
:class:`~stepflow_stream.distributed.orchestrator.Orchestrator` is for the agents): records
in (:meth:`Ingestor.take`), partitions assigned and revoked as the consumer group decides.

- A record's run id is derived from the consumer group and the record's coordinates
  (:func:`ingest_run_id`): a record read again after a crash names the same run, and the
  orchestrator starts a run id once, so its result is fetched, never computed twice.
- Results go out in input order per partition (hence per key), each in the output record
  shape below, with the input key. Per input partition, one transactional producer
  (``{group}-{topic}-{partition}``) writes a prefix of finished records and the group's offset
  after them in one Kafka transaction (``send_offsets_to_transaction``): a result is visible
  (to ``read_committed`` readers) exactly when its record's offset is committed. A crash
  aborts the open transaction; the next owner of the partition starts that producer first,
  which fences the old one and settles its transaction, then reads the committed offset and
  goes on from there: no record is produced twice, none is skipped.
- At most ``max_in_flight`` records are taken and not yet produced: the drivers stop
  fetching while there is no room.

Output records (JSON; the key is the input record's key)::

    {"outcome": "success", "result": ..., "runId": "...",
     "source": {"topic": "...", "partition": 0, "offset": 42}}
    {"outcome": "failed", "error": {"code": "...", "message": "..."}, "runId": "..." | null,
     "source": {...}, "value": "<the input record's value as text>"}

A failure is a run that failed, or a record whose value is not JSON or does not match the
flow's input schema (no run is started for it: ``runId`` is null). Failures go to the
dead-letter topic when one is given, else to the output topic like any result. A value that
is not UTF-8 is given as ``valueBase64`` instead of ``value``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.schema import describe
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.postgres_state import RUNS_CHANNEL
from stepflow_stream.errors import ErrorCode

__all__ = [
    "IngestSettings",
    "Ingestor",
    "decode_input",
    "default_group",
    "failure_record",
    "ingest_run_id",
    "result_record",
]

log = logging.getLogger("stepflow_stream.ingest")

_POLL_S = 1.0
"""How often the awaited runs are swept for those due a lookup without a notification."""
_FIRST_LOOKUP_S = 2.0
"""How long after it is awaited a run is first looked up without a notification: a run that
ended before its record was taken again (after a restart) gets none, nor does one whose
notification was missed. Runs that end sooner cost no lookup but the notified one."""
_MAX_LOOKUP_S = 10.0
"""The longest wait between two lookups of a run that has not ended (the waits double)."""
_STATS_EVERY_S = 5.0
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """What one ingest pipeline reads, writes and how much it keeps in flight."""

    from_topic: str
    """The input topic: one run per record, its value the run's input (JSON)."""
    to_topic: str
    """Where results go, with the input key, in input order per partition."""
    group: str
    """The consumer group; also part of run ids and transactional ids."""
    dead_letter_topic: str | None = None
    """Where failures go; without one they go to ``to_topic``."""
    max_in_flight: int = 1000
    """Records taken whose results are not yet produced; fetching stops at this many."""


def default_group(topic_prefix: str, from_topic: str, to_topic: str) -> str:
    """The consumer group of an ingest from ``from_topic`` to ``to_topic``."""
    return f"{topic_prefix}stepflow-ingest.{from_topic}.{to_topic}"


def ingest_run_id(group: str, topic: str, partition: int, offset: int) -> str:
    """The run id of the record at ``offset`` of ``topic``/``partition``: derived, so reading
    the record again names the same run (and the orchestrator starts a run id once)."""
    return f"{group}:{topic}:{partition}:{offset}"


def decode_input(value: bytes | None, flow: Flow) -> JSON | ErrorInfo:
    """The run input a record value holds, or why it holds none (an INVALID_INPUT error)."""
    if value is None:
        return ErrorInfo(ErrorCode.INVALID_INPUT,
                         "the record has no value (a tombstone); expected a JSON flow input")
    try:
        input: JSON = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        return ErrorInfo(ErrorCode.INVALID_INPUT, f"the record value is not valid JSON: {exc}")
    if flow.input_schema is not None:
        violations = flow.input_schema.violations(input)
        if violations:
            return ErrorInfo(ErrorCode.INVALID_INPUT,
                             f"flow input does not match the input schema: {describe(violations)}")
    return input


def _source(topic: str, partition: int, offset: int) -> JSONObject:
    return {"topic": topic, "partition": partition, "offset": offset}


def result_record(topic: str, partition: int, offset: int, run_id: str,
                  result: FlowResult) -> bytes:
    """The output record of a run that succeeded."""
    return _encoder.encode({"outcome": "success", "result": result.result, "runId": run_id,
                            "source": _source(topic, partition, offset)})


def failure_record(topic: str, partition: int, offset: int, run_id: str | None,
                   error: ErrorInfo, value: bytes | None) -> bytes:
    """The output (or dead-letter) record of a failed run or an unusable record."""
    record: JSONObject = {"outcome": "failed", "error": error.to_json(), "runId": run_id,
                          "source": _source(topic, partition, offset)}
    try:
        record["value"] = None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        record["valueBase64"] = base64.b64encode(value or b"").decode("ascii")
    return _encoder.encode(record)


# The engine -----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Record:
    lane: _Lane
    offset: int
    key: bytes | None
    value: bytes | None
    run_id: str
    input: JSON = None
    output: tuple[str, bytes] | None = None
    """(topic, value) once the record's outcome is known."""
    taken_at: float = 0.0
    settled_at: float = 0.0


class Ingestor:
    """Runs the records the drivers hand it and produces their results exactly once.

    ``on_fatal`` is called when a partition cannot go on (its producer fenced by a newer
    owner, or Kafka failing a transaction): the process must restart and re-read from the
    committed offsets.
    """

    def __init__(self, settings: IngestSettings, client: DistributedClient, flow: Flow,
                 variables: Mapping[str, JSON] | None = None, *,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.settings = settings
        self.client = client
        self.options = client.options
        self.flow = flow
        self.variables = dict(variables or {})
        self.on_fatal = on_fatal or _exit_on_fatal
        self.results = _Results(client)
        self._lanes: dict[int, _Lane] = {}
        self._revoked: set[int] = set()
        self._lanes_changed = asyncio.Event()
        self._in_flight = 0
        # Fetching resumes once a tenth of the bound is free, not at each record produced:
        # records then go out in batches (one submit, one transaction each).
        self._resume_at = settings.max_in_flight - max(1, settings.max_in_flight // 10)
        self._room = asyncio.Event()
        self._room.set()
        self._to_submit: list[_Record] = []
        self._submit_due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._metadata = AIOKafkaConsumer(bootstrap_servers=self.options.bootstrap_servers,
                                          enable_auto_commit=False)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.options.bootstrap_servers)
        self.stats = _Stats()

    async def start(self) -> None:
        await self._metadata.start()
        await self._admin.start()
        await self.results.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._submit_loop()),
                       loop.create_task(self.results.run(self._fatal)),
                       loop.create_task(self._log_stats())]

    async def stop(self) -> None:
        await self.revoke(set(self._lanes))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.results.stop()
        await self._admin.close()
        await self._metadata.stop()

    @property
    def partitions(self) -> list[int]:
        """The input partitions owned now."""
        return sorted(self._lanes)

    @property
    def room(self) -> int:
        """How many more records may be taken now."""
        return self.settings.max_in_flight - self._in_flight

    async def wait_for_room(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until a batch of records may be taken again."""
        if self._in_flight > self._resume_at:
            self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), timeout_s)

    # Partitions ------------------------------------------------------------------------------

    async def assign(self, partitions: set[int]) -> dict[int, int]:
        """Own ``partitions``: fence their previous owners, then read where their committed
        output ends. Returns the offset each new partition must be read from."""
        new = sorted(p for p in partitions if p not in self._lanes)
        if not new:
            return {}
        lanes = [_Lane(self, p) for p in new]
        try:
            # Fencing first: the old owner's open transaction is settled (aborted) before
            # the committed offsets are read, so they are final.
            await asyncio.gather(*(lane.producer.start() for lane in lanes))
            starts = await self._start_offsets(new)
        except Exception as exc:
            # Drivers run this in a rebalance callback, whose errors they only log: a
            # partition assigned but not owned would stall unnoticed.
            self._fatal(exc)
            raise
        for lane in lanes:
            lane.next_offset = starts[lane.partition]
            lane.start()
            self._lanes[lane.partition] = lane
            self._revoked.discard(lane.partition)
        self._lanes_changed.set()
        log.info("ingest: own partitions %s of %s from offsets %s", new,
                 self.settings.from_topic, starts)
        return starts

    async def revoke(self, partitions: set[int]) -> None:
        """Stop owning ``partitions`` once what is finished in them is produced; the rest is
        read again by their next owner (same run ids: nothing runs twice)."""
        lanes = [self._lanes.pop(p) for p in sorted(partitions) if p in self._lanes]
        self._revoked.update(partitions)
        await asyncio.gather(*(lane.stop() for lane in lanes))
        for lane in lanes:
            self.results.forget(r.run_id for r in lane.records)
            self._release(len(lane.records))

    async def _start_offsets(self, partitions: list[int]) -> dict[int, int]:
        topic = self.settings.from_topic
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = await self._admin.list_consumer_group_offsets(self.settings.group,
                                                                  partitions=tps)
        starts = {tp.partition: meta.offset for tp, meta in committed.items()
                  if meta.offset >= 0}
        missing = [tp for tp in tps if tp.partition not in starts]
        if missing:
            beginning = await self._metadata.beginning_offsets(missing)
            starts.update({tp.partition: offset for tp, offset in beginning.items()})
        return starts

    # Records ---------------------------------------------------------------------------------

    async def take(self, partition: int, offset: int, key: bytes | None,
                   value: bytes | None) -> int | None:
        """Take one record of the input topic (in offset order per partition). Returns None,
        or the offset the driver must seek the partition back to (records were missed)."""
        lane = self._lanes.get(partition)
        if lane is None:
            lane = await self._lane_when_assigned(partition)
            if lane is None:
                return None  # not ours (a record of a revoked partition): its owner reads it
        if offset > lane.next_offset:
            await self._skip_deleted(lane)
            if offset > lane.next_offset:
                return lane.next_offset  # records were missed: read them first
        if offset < lane.next_offset:
            return None  # produced already, or taken already
        lane.next_offset = offset + 1
        while self._in_flight >= self.settings.max_in_flight:
            await self.wait_for_room(_POLL_S)
        if lane.stopping:
            return None
        self._in_flight += 1
        run_id = ingest_run_id(self.settings.group, self.settings.from_topic, partition, offset)
        record = _Record(lane, offset, key, value, run_id, taken_at=time.monotonic())
        lane.records.append(record)
        decoded = decode_input(value, self.flow)
        if isinstance(decoded, ErrorInfo):
            self._settle(record, None, decoded)
        else:
            record.input = decoded
            self._to_submit.append(record)
            self._submit_due.set()
        self.stats.taken += 1
        return None

    async def _lane_when_assigned(self, partition: int) -> _Lane | None:
        # A driver may hand over records of a partition a little before the assignment is
        # announced to us; a revoked partition's stragglers are dropped.
        deadline = time.monotonic() + max(1.0, self.options.session_timeout_s)
        while partition not in self._lanes and partition not in self._revoked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._lanes_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lanes_changed.wait(), remaining)
        return self._lanes.get(partition)

    async def _skip_deleted(self, lane: _Lane) -> None:
        """Move past offsets that retention deleted before they were read (else the driver
        would seek back to them forever)."""
        tp = TopicPartition(self.settings.from_topic, lane.partition)
        first: int = (await self._metadata.beginning_offsets([tp]))[tp]
        if first > lane.next_offset:
            log.warning("ingest: %s[%d] offsets %d to %d were deleted (retention) before "
                        "they were read", tp.topic, tp.partition, lane.next_offset, first - 1)
            lane.next_offset = first

    def _settle(self, record: _Record, result: FlowResult | None,
                error: ErrorInfo | None) -> None:
        settings = self.settings
        topic, partition = settings.from_topic, record.lane.partition
        if result is not None and result.ok:
            record.output = (settings.to_topic, result_record(
                topic, partition, record.offset, record.run_id, result))
        else:
            if result is not None:
                assert result.error is not None
                error = result.error
            assert error is not None
            run_id = record.run_id if result is not None else None
            record.output = (settings.dead_letter_topic or settings.to_topic, failure_record(
                topic, partition, record.offset, run_id, error, record.value))
        record.settled_at = time.monotonic()
        record.lane.wake.set()

    def _release(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight <= self._resume_at:
            self._room.set()

    async def _submit_loop(self) -> None:
        """Sends the records taken since the last send as one ``submit_many``."""
        try:
            while True:
                await self._submit_due.wait()
                self._submit_due.clear()
                records = [r for r in self._to_submit if not r.lane.stopping]
                self._to_submit = []
                if not records:
                    continue
                for record in records:
                    self.results.watch(record.run_id, self._settler(record))
                # A run id submitted again (read again after a crash) starts nothing: its
                # result, if it has ended, is found by the next look-up of every awaited run.
                await self.client.submit_many(
                    self.flow, [r.input for r in records], self.variables,
                    run_ids=[r.run_id for r in records])
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fatal(exc)
            raise

    def _settler(self, record: _Record) -> Callable[[FlowResult], None]:
        def settle(result: FlowResult) -> None:
            if not record.lane.stopped:
                self._settle(record, result, None)

        return settle

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(_STATS_EVERY_S)
            stats, self.stats = self.stats, _Stats()
            if stats.taken or stats.produced:
                elapsed = time.monotonic() - stats.since
                log.info("ingest: %.0f records/s taken, %.0f records/s produced in %.0f "
                         "transactions/s, %d in flight; a record took %.0f ms to its result, "
                         "%.0f ms more to be produced",
                         stats.taken / elapsed, stats.produced / elapsed,
                         stats.transactions / elapsed, self._in_flight,
                         stats.to_result_s / max(1, stats.produced) * 1000,
                         stats.to_produced_s / max(1, stats.produced) * 1000)

    def _fatal(self, exc: BaseException) -> None:
        log.critical("ingest cannot go on: %r", exc)
        self.on_fatal(exc)


class _Lane:
    """One input partition: its records in offset order and the producer of their results."""

    def __init__(self, ingestor: Ingestor, partition: int) -> None:
        self.ingestor = ingestor
        self.partition = partition
        settings = ingestor.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=ingestor.options.bootstrap_servers,
            transactional_id=f"{settings.group}-{settings.from_topic}-{partition}",
            linger_ms=0,
        )
        self.records: deque[_Record] = deque()
        self.next_offset = 0
        self.wake = asyncio.Event()
        self.stopping = False
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._produce_loop())

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            with contextlib.suppress(Exception):  # already reported through on_fatal
                await self.task
        self.stopped = True
        with contextlib.suppress(Exception):  # the broker went away: the next owner fences
            await self.producer.stop()

    async def _produce_loop(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                ready: list[_Record] = []
                while self.records and self.records[0].output is not None:
                    ready.append(self.records.popleft())
                if ready:
                    await self._produce(ready)
                    self.ingestor._release(len(ready))
                    self.ingestor.stats.add(ready, time.monotonic())
                if self.stopping:
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.ingestor._fatal(exc)
            raise

    async def _produce(self, ready: list[_Record]) -> None:
        """Produce ``ready`` (a prefix of the partition's records) and commit the offset after
        them, in one transaction."""
        settings = self.ingestor.settings
        producer = self.producer
        await producer.begin_transaction()
        deliveries = []
        for record in ready:
            assert record.output is not None
            topic, value = record.output
            # A keyed result goes where its key goes; an unkeyed one keeps the input
            # partition's order by going to one partition.
            partition = None if record.key is not None else await self._unkeyed_partition(topic)
            deliveries.append(await producer.send(topic, value, key=record.key,
                                                  partition=partition))
        await asyncio.gather(*deliveries)
        offsets = {TopicPartition(settings.from_topic, self.partition): ready[-1].offset + 1}
        await producer.send_offsets_to_transaction(offsets, settings.group)
        await producer.commit_transaction()

    async def _unkeyed_partition(self, topic: str) -> int:
        partitions: set[int] = await self.producer.partitions_for(topic)
        return self.partition % len(partitions)


@dataclass(slots=True)
class _Awaited:
    settle: Callable[[FlowResult], None]
    next_lookup: float
    wait: float = _FIRST_LOOKUP_S


class _Results:
    """Waits for runs to end: a LISTEN on the channel the orchestrator announces finished runs
    on, with a lookup in the run index for each notified run; a run not notified is looked up
    anyway, ``_FIRST_LOOKUP_S`` after it is awaited and then less and less often. (Looking up
    every awaited run every second cost the database more than the projection of the runs.)"""

    def __init__(self, client: DistributedClient) -> None:
        self.client = client
        self.awaited: dict[str, _Awaited] = {}
        self.to_check: set[str] = set()
        self.due = asyncio.Event()
        self.listener: Any = None

    async def start(self) -> None:
        self.listener = await asyncpg.connect(self.client.options.database_url)
        await self.listener.add_listener(RUNS_CHANNEL, self._notified)

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.close()

    def watch(self, run_id: str, settle: Callable[[FlowResult], None]) -> None:
        self.awaited[run_id] = _Awaited(settle, time.monotonic() + _FIRST_LOOKUP_S)

    def forget(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self.awaited.pop(run_id, None)

    def _notified(self, _connection: Any, _pid: int, _channel: str, run_id: str) -> None:
        if run_id in self.awaited:
            self.to_check.add(run_id)
            self.due.set()

    async def run(self, fatal: Callable[[BaseException], None]) -> None:
        try:
            last_sweep = time.monotonic()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.due.wait(), _POLL_S)
                self.due.clear()
                run_ids = [r for r in self.to_check if r in self.awaited]
                self.to_check.clear()
                now = time.monotonic()
                if now - last_sweep >= _POLL_S:
                    last_sweep = now
                    run_ids.extend(self._due(now))
                if run_ids:
                    try:
                        await self._look_up(run_ids)
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                        log.warning("ingest: looking up run results failed: %r", exc)
                        for run_id in run_ids:  # again at the next sweep
                            awaited = self.awaited.get(run_id)
                            if awaited is not None:
                                awaited.next_lookup = now
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            fatal(exc)
            raise

    def _due(self, now: float) -> list[str]:
        """The awaited runs due a lookup without a notification; their next one is later."""
        due = []
        for run_id, awaited in self.awaited.items():
            if awaited.next_lookup <= now:
                due.append(run_id)
                awaited.wait = min(awaited.wait * 2, _MAX_LOOKUP_S)
                awaited.next_lookup = now + awaited.wait
        return due

    async def _look_up(self, run_ids: list[str]) -> None:
        database = self.client.database
        assert database is not None
        rows = await database.pool.fetch(
            "SELECT run_id, result FROM runs WHERE run_id = ANY($1::text[]) "
            "AND result IS NOT NULL", run_ids)
        for row in rows:
            awaited = self.awaited.pop(row["run_id"], None)
            if awaited is not None:
                awaited.settle(FlowResult.from_json(_decoder.decode(row["result"])))


@dataclass(slots=True)
class _Stats:
    """What the log says every few seconds: rates, and where a record's time went."""

    taken: int = 0
    produced: int = 0
    transactions: int = 0
    to_result_s: float = 0.0
    to_produced_s: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def add(self, produced: list[_Record], now: float) -> None:
        self.transactions += 1
        self.produced += len(produced)
        for record in produced:
            self.to_result_s += record.settled_at - record.taken_at
            self.to_produced_s += now - record.settled_at


def _exit_on_fatal(exc: BaseException) -> None:
    # Results may be settled in memory that are not produced: only a restart that reads again
    # from the committed offsets is safe (the same run ids make it cheap).
    log.critical("ingest exits: %r", exc)
    os._exit(70)
