"""The orchestrator: the one writer of its journal partitions.

For each partition *p* of the commands topic it owns, it keeps the state of the partition's
unfinished runs in memory and turns commands into events with the pure scheduler. What the
commands cause (events on journal partition *p*, tasks on the task topics) is written in Kafka
transactions of the producer ``{prefix}stepflow-orchestrator-{p}``: a new owner of *p* starts
that producer first, which fences the old owner and aborts its open transaction, and only then
reads the journal (invariants 5 and 6).

A transaction stays open across batches of commands and is committed when a run in it ends,
when it has been open ``transaction_max_s``, or when it is large. Workers read task records
without waiting for the commit, so a step costs no transaction round trip; a crash aborts the
open transaction and the next owner decides those steps again, with the same task ids, from the
committed journal (task execution is at-least-once, each result is applied once).

Commands are acknowledged (their offsets become committable) only after the transaction that
holds their events has committed. A command delivered again after a crash changes nothing: the
state folded from the journal already holds its events (invariant 2).

After each commit the events go to PostgreSQL (projection and run index). Every
``checkpoint_every`` events or ``checkpoint_interval_s`` seconds, the runs changed since the
last checkpoint are snapshotted and the partition's checkpoint (the journal offset the
snapshots cover) is written after them: catching up reads only the journal after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from stepflow_stream.config.model import Config
from stepflow_stream.core.events import (
    Command,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StepStarted,
    SubmitRun,
)
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.scheduler import RunPlan, decide, handle, task_input
from stepflow_stream.core.state import RunState, apply
from stepflow_stream.core.variables import resolve_variables
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.distributed.postgres_state import CheckpointStore, notify_finished
from stepflow_stream.errors import JournalError, StepflowError
from stepflow_stream.journal.codec import encode_event
from stepflow_stream.journal.postgres import (
    PostgresBlobStore,
    PostgresDatabase,
    PostgresJournal,
    PostgresSnapshotStore,
)
from stepflow_stream.journal.snapshots import Snapshot, decode_state, snapshot_of
from stepflow_stream.kafka.batches import send_batched
from stepflow_stream.kafka.command_codec import decode_command
from stepflow_stream.kafka.journal_reader import read_partition
from stepflow_stream.kafka.records import key_partition, partition_for, run_key

__all__ = ["CatchUpReport", "Orchestrator"]

log = logging.getLogger("stepflow_stream.orchestrator")

Ack = Callable[[], Awaitable[object] | None]
"""Marks one command's offset as committable; what it returns, if anything, is awaited (a
synchronous ack saves a task per command)."""

_TERMINAL = (RunCompleted, RunFailed, RunCancelled)
_FINISHED_KEPT = 100_000
_INBOX_LIMIT = 10_000
_STATS_EVERY_S = 5.0
_RECORDS_PER_TRANSACTION = 20_000


@dataclass(frozen=True, slots=True)
class CatchUpReport:
    """What catching up on one partition read: the test of invariant 5 and of snapshots."""

    partition: int
    from_offset: int
    """The checkpoint the read started from."""
    events_read: int
    """Journal records read from ``from_offset`` to the end."""
    events_applied: int
    """Of those, the events not already in a snapshot."""
    snapshots_loaded: int
    unfinished_runs: int
    seconds: float


@dataclass(slots=True)
class _Run:
    state: RunState
    plan: RunPlan | None
    snapshotted: bool = False
    """A snapshot of the run, not terminal, is (or is about to be) stored: its end must replace
    it, or catching up would take the run for unfinished. A run that ends between checkpoints
    (most do) never gets a snapshot at all."""


@dataclass(slots=True)
class _Batch:
    events: list[Event] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    """``encode_event`` of each event, made once for the journal topic and the projection."""
    tasks: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


class Orchestrator:
    """Owns journal partitions as Kafka assigns the commands topic's partitions to it.

    Driven from outside (the Faust agent in ``agents/``): :meth:`assign` and :meth:`revoke` on
    rebalances, :meth:`command` for each record of the commands topic. ``on_fatal`` is called
    when a partition cannot go on (fenced by a newer owner, or a failed transaction): its
    in-memory state may be ahead of the journal, so the process must restart and catch up.
    """

    def __init__(
        self,
        options: DistributedOptions,
        config: Config,
        database: PostgresDatabase,
        *,
        env: Mapping[str, str] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_caught_up: Callable[[CatchUpReport], None] | None = None,
    ) -> None:
        self.options = options
        self.config = config
        self.database = database
        self.env = os.environ if env is None else env
        self.on_fatal = on_fatal or _exit_on_fatal
        self.on_caught_up = on_caught_up
        self.journal = PostgresJournal(database)
        self.blobs = PostgresBlobStore(database)
        self.snapshots = PostgresSnapshotStore(database)
        self.checkpoints = CheckpointStore(database)
        self._owners: dict[int, _PartitionOwner] = {}
        self._plans: dict[str, RunPlan] = {}

    async def assign(self, partitions: set[int]) -> None:
        """Start owning ``partitions``: each catches up in the background before it acts."""
        for partition in sorted(partitions):
            if partition not in self._owners:
                owner = self._owners[partition] = _PartitionOwner(self, partition)
                owner.start()

    async def revoke(self, partitions: set[int]) -> None:
        """Stop owning ``partitions`` once what they have staged is committed."""
        owners = [self._owners.pop(p) for p in sorted(partitions) if p in self._owners]
        await asyncio.gather(*(owner.stop() for owner in owners))

    async def command(self, partition: int, value: bytes, ack: Ack) -> None:
        """Take one record of the commands topic; ``ack`` is called once its effects are
        committed. Waits while the partition's inbox is full."""
        owner = self._owners.get(partition)
        if owner is None:
            await self.assign({partition})
            owner = self._owners[partition]
        await owner.put(value, ack)

    async def stop(self) -> None:
        await self.revoke(set(self._owners))
        await self.journal.close()

    @property
    def partitions(self) -> list[int]:
        return sorted(self._owners)

    # Shared by partition owners --------------------------------------------------------------

    async def plan(self, flow_id: str) -> RunPlan | None:
        """The plan of a stored flow; None if no blob holds it (the run then fails)."""
        plan = self._plans.get(flow_id)
        if plan is None:
            try:
                document = await self.blobs.get(flow_id)
            except KeyError:
                return None
            flow = parse_flow(document, source=f"flow {flow_id[:12]}")
            plan = self._plans[flow_id] = RunPlan(flow, self.config.routes)
        return plan

    def secrets(self, plan: RunPlan | None) -> dict[str, JSON]:
        """Secret variables come from the orchestrator's environment: they never travel in
        commands or events."""
        if plan is None or plan.flow.variables_schema is None:
            return {}
        try:
            resolved = resolve_variables(plan.flow, {}, self.env)
        except StepflowError:
            return {}
        return {k: resolved.values[k] for k in resolved.secrets if k in resolved.values}


class _PartitionOwner:
    """One journal partition: its runs, its transactional producer, its commit loop."""

    def __init__(self, orchestrator: Orchestrator, partition: int) -> None:
        self.orchestrator = orchestrator
        self.options = orchestrator.options
        self.partition = partition
        self.runs: dict[str, _Run] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.dirty: set[str] = set()
        self.inbox: list[tuple[bytes, Ack]] = []
        self.inbox_changed = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.stopping = False
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.options.bootstrap_servers,
            transactional_id=f"{self.options.topic_prefix}stepflow-orchestrator-{partition}",
            linger_ms=0,
            max_batch_size=512 * 1024,
        )
        self.journal_topic = self.options.topics.journal
        self.next_offset = 0
        self.events_since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.open: _OpenTransaction | None = None
        self.stats = _Stats(partition)
        self.loop_task: asyncio.Task[None] | None = None
        self.projection: asyncio.Queue[_Projection | None] = asyncio.Queue()
        self.projector_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.stopping = True
        self.inbox_changed.set()
        if self.loop_task is not None:
            with contextlib.suppress(Exception):  # already reported through on_fatal
                await self.loop_task
        if self.projector_task is not None:
            await self.projection.put(None)
            await self.projector_task
        await self.producer.stop()

    async def put(self, value: bytes, ack: Ack) -> None:
        while len(self.inbox) >= _INBOX_LIMIT:
            self.room.clear()
            await self.room.wait()
        self.inbox.append((value, ack))
        self.inbox_changed.set()

    # The loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.producer.start()  # fences the previous owner of this partition
            await self._catch_up()
            self.projector_task = asyncio.get_running_loop().create_task(self._project())
            while True:
                if not self.inbox:
                    if self.open is not None and (self.stopping or self._commit_due()):
                        await self._commit_open()
                        continue
                    if self.stopping:
                        return
                    self.inbox_changed.clear()
                    timeout = None if self.open is None else self._until_due()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.inbox_changed.wait(), timeout)
                    continue
                received, self.inbox = self.inbox, []
                self.room.set()
                batch = await self._process(received)
                await self._append(batch)
                if self._commit_due():
                    await self._commit_open()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("partition %d cannot go on: %r", self.partition, exc)
            self.orchestrator.on_fatal(exc)
            raise

    async def _process(self, received: list[tuple[bytes, Ack]]) -> _Batch:
        batch = _Batch()
        commands: list[tuple[Command, Ack]] = []
        for value, ack in received:
            try:
                commands.append((decode_command(value), ack))
            except JournalError as exc:
                # Anyone may produce to the commands topic: a record that is no command is
                # skipped (it stays on the topic), not retried forever by restart after restart.
                log.error("partition %d: skipped a record of the commands topic that is not a "
                          "command: %s (%d bytes, starting %s)", self.partition, exc,
                          len(value), value[:24].hex())
                batch.acks.append(ack)
        await self._adopt_new_runs([command for command, _ in commands])
        now = int(time.time() * 1000)
        for command, ack in commands:
            batch.acks.append(ack)
            run = self.runs.get(command.run_id)
            if run is None:
                continue  # a finished run's late result, or a duplicate submission
            events = handle(run.plan, run.state, command, now)
            if events:
                self._stage(run, events, batch)
        return batch

    async def _adopt_new_runs(self, commands: list[Command]) -> None:
        """Make a run for each submission of a run id this partition has never seen. A run id
        already in the run index (finished before the last checkpoint) is not started again."""
        new = {c.run_id: c for c in commands
               if isinstance(c, SubmitRun) and c.run_id not in self.runs
               and c.run_id not in self.finished}
        if not new:
            return
        known = await self.orchestrator.database.pool.fetch(
            "SELECT run_id FROM runs WHERE run_id = ANY($1::text[])", list(new)
        )
        for row in known:
            new.pop(row[0], None)
            self._remember_finished(row[0])
        for run_id, submit in new.items():
            plan = await self.orchestrator.plan(submit.flow_id)
            state = RunState(run_id)
            state.secrets = self.orchestrator.secrets(plan)
            self.runs[run_id] = _Run(state, plan)

    def _stage(self, run: _Run, events: list[Event], batch: _Batch) -> None:
        state = run.state
        batch.events.extend(events)
        self.dirty.add(state.run_id)
        for event in events:
            body = encode_event(event)
            batch.bodies.append(body)
            if type(event) is StepStarted:
                if state.secrets and run.plan is not None:
                    # The journal has the redacted input; the task needs the real one.
                    body = encode_event(dataclasses.replace(
                        event, input=task_input(run.plan, state, event.step_id)
                    ))
                topic = self.options.topics.tasks(event.plugin)
                key = state.run_id if event.affinity is None else event.affinity
                batch.tasks.append((topic, run_key(key), body))
        if state.terminal:
            batch.finished.append(state.run_id)

    # Transactions ---------------------------------------------------------------------------
    #
    # A transaction stays open across batches: records go out as batches are processed, and
    # workers (which read uncommitted task records) start at once, so a step costs no
    # transaction round trip. It is committed as soon as a run in it has ended (so the end is
    # visible), when it has been open ``transaction_max_s``, or when it holds many records;
    # commands are acknowledged only then. A crash aborts it whole: the next owner decides
    # those steps again (with the same task ids) from the committed journal.

    async def _append(self, batch: _Batch) -> None:
        if self.open is None:
            if not batch.events:
                await _acknowledge(batch.acks)
                return
            await self.producer.begin_transaction()
            self.open = _OpenTransaction(time.monotonic())
        if batch.events:
            last = await self._send(batch)
            self.open.last_offset = last
            self.open.records += len(batch.events) + len(batch.tasks)
            self.open.finished = self.open.finished or bool(batch.finished)
        self.open.batches.append(batch)

    def _commit_due(self) -> bool:
        open = self.open
        return open is not None and (
            open.finished or open.records >= _RECORDS_PER_TRANSACTION or self._until_due() <= 0
        )

    def _until_due(self) -> float:
        assert self.open is not None
        return self.open.started + self.options.transaction_max_s - time.monotonic()

    async def _commit_open(self) -> None:
        open, self.open = self.open, None
        assert open is not None and open.last_offset is not None
        await self.producer.commit_transaction()
        self.next_offset = await open.last_offset + 1
        commands = events = 0
        for batch in open.batches:
            await _acknowledge(batch.acks)
            self._after_commit(batch)
            commands += len(batch.acks)
            events += len(batch.events)
        self.stats.add(commands, events, time.monotonic() - open.started)

    async def _send(self, batch: _Batch) -> Awaitable[int]:
        """Queue the batch's records in the open transaction (in order after those before
        them: one producer, one partition); returns what resolves to the journal's last offset
        once the broker has them all."""
        producer = self.producer
        journal = [(run_key(event.run_id), body)
                   for event, body in zip(batch.events, batch.bodies, strict=True)]
        last = await send_batched(producer, self.journal_topic, self.partition, journal)
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        for topic, key, value in batch.tasks:
            partition = key_partition(key, self.options.task_partitions)
            by_partition.setdefault((topic, partition), []).append((key, value))
        others = [await send_batched(producer, topic, partition, records)
                  for (topic, partition), records in by_partition.items()]

        async def delivered() -> int:
            offset = await last
            await asyncio.gather(*others)
            return offset

        return asyncio.ensure_future(delivered())

    async def _commit(self, batch: _Batch) -> None:
        """Write ``batch`` in a transaction of its own and wait for the commit (catching up,
        when nothing else is in flight)."""
        await self._append(batch)
        if self.open is not None:
            await self._commit_open()

    def _after_commit(self, batch: _Batch) -> None:
        snapshots: list[Snapshot] = []
        for run_id in batch.finished:
            run = self.runs.pop(run_id, None)
            if run is not None:
                if run.snapshotted:
                    snapshots.append(snapshot_of(run.state))
                self.dirty.discard(run_id)
                self._remember_finished(run_id)
        self.events_since_checkpoint += len(batch.events)
        checkpoint: int | None = None
        due = (self.events_since_checkpoint >= self.options.checkpoint_every
               or time.monotonic() - self.last_checkpoint >= self.options.checkpoint_interval_s)
        if due:
            for run_id in self.dirty:
                run = self.runs.get(run_id)
                if run is not None:
                    snapshots.append(snapshot_of(run.state))
                    run.snapshotted = True
            self.dirty.clear()
            checkpoint = self.next_offset
            self.events_since_checkpoint = 0
            self.last_checkpoint = time.monotonic()
        self.projection.put_nowait(_Projection(
            list(zip(batch.events, batch.bodies, strict=True)), snapshots, batch.finished,
            checkpoint))

    def _remember_finished(self, run_id: str) -> None:
        self.finished[run_id] = None
        if len(self.finished) > _FINISHED_KEPT:
            self.finished.popitem(last=False)

    # Catching up ----------------------------------------------------------------------------

    async def _catch_up(self) -> None:
        started = time.monotonic()
        orchestrator = self.orchestrator
        partitions = self.options.partitions
        from_offset = await orchestrator.checkpoints.load(self.journal_topic, self.partition)
        snapshots = [s for s in await orchestrator.snapshots.unfinished()
                     if partition_for(s.run_id, partitions) == self.partition]
        states = {s.run_id: decode_state(s.state) for s in snapshots}
        snapshotted = set(states)
        read = applied = 0
        events: list[Event] = []
        advanced: set[str] = set()
        unknown: set[str] = set()
        self.next_offset = from_offset
        async for offset, event in read_partition(
            self.options.bootstrap_servers, self.journal_topic, self.partition, from_offset
        ):
            read += 1
            self.next_offset = offset + 1
            events.append(event)
            state = states.get(event.run_id)
            if state is None:
                if event.seq != 0:
                    unknown.add(event.run_id)  # started before the checkpoint: see below
                    continue
                state = states[event.run_id] = RunState(event.run_id)
            if event.seq >= state.next_seq:
                apply(state, event)
                applied += 1
                advanced.add(event.run_id)
        if unknown:
            # A run is in a snapshot whenever the checkpoint passed its events; a run missing
            # here finished before the checkpoint, so its late events (none are expected) are
            # only projected.
            log.warning("partition %d: %d runs with events after the checkpoint but no "
                        "unfinished snapshot", self.partition, len(unknown))
        if events:
            await orchestrator.journal.write(events)  # idempotent: re-projects what may be missing
        for run_id in unknown:
            self._remember_finished(run_id)
        batch = _Batch()
        # Runs the read advanced are ahead of their snapshots: the next checkpoint must cover
        # them, and the ones that ended get their final snapshot now.
        final = [snapshot_of(states[r]) for r in advanced if states[r].terminal]
        self.dirty.update(r for r in advanced if not states[r].terminal)
        for run_id, state in states.items():
            if state.terminal:
                self._remember_finished(run_id)
                continue
            plan = await orchestrator.plan(state.flow_id or "")
            state.secrets = orchestrator.secrets(plan)
            run = self.runs[run_id] = _Run(state, plan, snapshotted=run_id in snapshotted)
            if plan is not None:
                more = decide(plan, state, int(time.time() * 1000))
                if more:
                    self._stage(run, more, batch)
        await self._commit(batch)
        if final:
            await orchestrator.snapshots.save_many(final)
        report = CatchUpReport(
            partition=self.partition, from_offset=from_offset, events_read=read,
            events_applied=applied, snapshots_loaded=len(snapshots),
            unfinished_runs=len(self.runs), seconds=round(time.monotonic() - started, 3),
        )
        log.info("caught up %s", json.dumps(dataclasses.asdict(report)))
        if orchestrator.on_caught_up is not None:
            orchestrator.on_caught_up(report)

    # Postgres, after Kafka ------------------------------------------------------------------

    async def _project(self) -> None:
        orchestrator = self.orchestrator
        while True:
            item = await self.projection.get()
            if item is None:
                return
            # Everything queued so far goes in one write: the projection keeps up in bursts.
            items = [item]
            while not self.projection.empty():
                more = self.projection.get_nowait()
                if more is None:
                    await self.projection.put(None)
                    break
                items.append(more)
            try:
                await orchestrator.journal.write_encoded([e for i in items for e in i.events])
                snapshots = [s for i in items for s in i.snapshots]
                if snapshots:
                    await orchestrator.snapshots.save_many(snapshots)
                checkpoints = [i.checkpoint for i in items if i.checkpoint is not None]
                if checkpoints:
                    await orchestrator.checkpoints.save(
                        self.journal_topic, self.partition, max(checkpoints)
                    )
                await notify_finished(orchestrator.database,
                                      [r for i in items for r in i.finished])
            except Exception as exc:
                log.critical("partition %d: projection failed: %r", self.partition, exc)
                orchestrator.on_fatal(exc)
                return


async def _acknowledge(acks: list[Ack]) -> None:
    pending = [awaitable for ack in acks if (awaitable := ack()) is not None]
    if pending:
        await asyncio.gather(*pending)


class _Stats:
    """Logs, every ``_STATS_EVERY_S`` of activity, how many commands one transaction carried
    and how long it stayed open: what to look at when throughput or latency disappoints."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.since = time.monotonic()
        self.transactions = self.commands = self.events = 0
        self.open_s = 0.0

    def add(self, commands: int, events: int, open_s: float) -> None:
        self.transactions += 1
        self.commands += commands
        self.events += events
        self.open_s += open_s
        elapsed = time.monotonic() - self.since
        if elapsed >= _STATS_EVERY_S:
            log.info(
                "partition %d: %.0f commands/s, %.0f events/s, %d transactions, "
                "%.1f commands per transaction, open %.2f ms on average",
                self.partition, self.commands / elapsed, self.events / elapsed,
                self.transactions, self.commands / self.transactions,
                self.open_s / self.transactions * 1000,
            )
            self.since = time.monotonic()
            self.transactions = self.commands = self.events = 0
            self.open_s = 0.0


@dataclass(slots=True)
class _OpenTransaction:
    started: float
    batches: list[_Batch] = field(default_factory=list)
    records: int = 0
    finished: bool = False
    """A run in it has ended: commit now, so its end becomes visible."""
    last_offset: Awaitable[int] | None = None


@dataclass(frozen=True, slots=True)
class _Projection:
    events: list[tuple[Event, bytes]]
    snapshots: list[Snapshot]
    finished: list[str]
    checkpoint: int | None


def _exit_on_fatal(exc: BaseException) -> None:
    # The state in memory may be ahead of the journal: only a restart that catches up from
    # Kafka is safe. Commands not yet acknowledged are delivered again to the next owner.
    log.critical("orchestrator exits: %r", exc)
    os._exit(70)
