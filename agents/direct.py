"""The same agents without Faust's stream machinery: plain aiokafka consumer groups.

The orchestrator and the workers are the same objects as in :mod:`agents.app`
(:class:`~stepflow_stream.distributed.orchestrator.Orchestrator`,
:class:`~stepflow_stream.distributed.worker.TaskWorker`); only what feeds them records and
commits their offsets differs. Faust hands each record through a consumer thread and several
queues, which costs about 1.5 ms per hop on a small machine; a workflow step takes two hops.
``stepflow-stream agents --driver direct`` selects this module.

Offsets are committed as Faust's at-least-once mode does: only up to the first record not yet
done (for the orchestrator: whose events are not yet committed; for a worker: whose result is
not yet on the commands topic), every half second and when partitions are revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from stepflow_stream.config.model import Config
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.distributed.orchestrator import CatchUpReport, Orchestrator
from stepflow_stream.distributed.worker import TaskWorker
from stepflow_stream.journal.postgres import PostgresDatabase
from stepflow_stream.kafka.topics import ensure_topics

__all__ = ["run_direct"]

log = logging.getLogger("stepflow_stream.agents")

_COMMIT_EVERY_S = 0.5


class _Progress:
    """Per partition: the offsets handed out and not yet done, and what may be committed."""

    def __init__(self) -> None:
        self.pending: dict[TopicPartition, dict[int, bool]] = {}
        self.committable: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self.pending.setdefault(tp, {})[offset] = False

    def done(self, tp: TopicPartition, offset: int) -> None:
        offsets = self.pending.get(tp)
        if offsets is None or offset not in offsets:
            return  # the partition was revoked meanwhile
        offsets[offset] = True
        # Offsets were inserted in order: pop the done prefix.
        while offsets:
            first = next(iter(offsets))
            if not offsets[first]:
                break
            del offsets[first]
            self.committable[tp] = first + 1

    def take(self) -> dict[TopicPartition, int]:
        taken, self.committable = self.committable, {}
        return taken

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.pending.pop(tp, None)
            self.committable.pop(tp, None)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, progress: _Progress,
                 assigned: Callable[[set[int]], Awaitable[None]],
                 revoked: Callable[[set[int]], Awaitable[None]]) -> None:
        self.consumer = consumer
        self.progress = progress
        self.assigned = assigned
        self.revoked = revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.revoked({tp.partition for tp in revoked})
        await _commit(self.consumer, self.progress)
        self.progress.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.assigned({tp.partition for tp in assigned})


async def _commit(consumer: AIOKafkaConsumer, progress: _Progress) -> None:
    offsets = progress.take()
    if offsets:
        with contextlib.suppress(Exception):  # a rebalance under way: the next owner re-reads
            await consumer.commit(offsets)


async def _committer(consumer: AIOKafkaConsumer, progress: _Progress) -> None:
    while True:
        await asyncio.sleep(_COMMIT_EVERY_S)
        await _commit(consumer, progress)


def _consumer(options: DistributedOptions, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap_servers,
        group_id=f"{options.topic_prefix}stepflow-{group}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(options.session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(1.0, options.session_timeout_s / 4) * 1000),
        max_poll_records=5000,
    )


async def _orchestrate(options: DistributedOptions, config: Config,
                       on_caught_up: Callable[[CatchUpReport], None]) -> None:
    database = await PostgresDatabase.connect(options.database_url)
    orchestrator = Orchestrator(options, config, database, on_caught_up=on_caught_up)
    consumer = _consumer(options, "orchestrator")
    progress = _Progress()

    async def revoked(partitions: set[int]) -> None:
        await orchestrator.revoke(partitions)

    consumer.subscribe([options.topics.commands],
                       listener=_Listener(consumer, progress, orchestrator.assign, revoked))
    await consumer.start()
    log.info("[^Worker]: Ready (orchestrator, direct driver)")
    committer = asyncio.get_running_loop().create_task(_committer(consumer, progress))
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    progress.started(tp, record.offset)

                    def ack(tp: TopicPartition = tp, offset: int = record.offset) -> None:
                        progress.done(tp, offset)

                    assert record.value is not None
                    await orchestrator.command(tp.partition, record.value, ack)
    finally:
        committer.cancel()
        await orchestrator.stop()
        await _commit(consumer, progress)
        await consumer.stop()
        await database.close()


async def _work(options: DistributedOptions, config: Config, component_class: str,
                base_dir: Path | None) -> None:
    database = await PostgresDatabase.connect(options.database_url, max_size=4)
    worker = TaskWorker(options, config, database, component_class, base_dir=base_dir)
    await worker.start()
    consumer = _consumer(options, f"worker-{component_class}")
    progress = _Progress()
    slots = asyncio.Semaphore(options.worker(component_class).concurrency)
    running: set[asyncio.Task[None]] = set()

    async def nothing(partitions: set[int]) -> None:
        return None

    async def revoked(partitions: set[int]) -> None:
        # Tasks of revoked partitions still finish: their results are applied once anyway.
        if running:
            await asyncio.wait(set(running))

    consumer.subscribe([options.topics.tasks(component_class)],
                       listener=_Listener(consumer, progress, nothing, revoked))
    await consumer.start()
    log.info("[^Worker]: Ready (worker:%s, direct driver)", component_class)
    committer = asyncio.get_running_loop().create_task(_committer(consumer, progress))

    async def execute(tp: TopicPartition, offset: int, value: bytes) -> None:
        try:
            await worker.execute(value)
        except Exception:
            log.exception("task at %s[%d] offset %d failed", tp.topic, tp.partition, offset)
            raise
        else:
            progress.done(tp, offset)
        finally:
            slots.release()

    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    await slots.acquire()
                    progress.started(tp, record.offset)
                    assert record.value is not None
                    task = asyncio.get_running_loop().create_task(
                        execute(tp, record.offset, record.value))
                    running.add(task)
                    task.add_done_callback(running.discard)
    finally:
        committer.cancel()
        for task in running:
            task.cancel()
        await _commit(consumer, progress)
        await consumer.stop()
        await worker.stop()
        await database.close()


def run_direct(options: DistributedOptions, config: Config, role: str,
               component_classes: list[str], *, base_dir: Path | None = None,
               on_caught_up: Callable[[CatchUpReport], None] | None = None) -> None:
    """Run one role (``orchestrator`` or ``worker:<class>``) until SIGTERM or SIGINT."""

    async def main() -> None:
        await ensure_topics(
            options.bootstrap_servers, options.topics, options.partitions,
            options.replication_factor, component_classes=component_classes,
            task_partitions=options.task_partitions,
        )
        loop = asyncio.get_running_loop()
        if role == "orchestrator":
            agent = loop.create_task(_orchestrate(options, config, on_caught_up or _ignore))
        else:
            agent = loop.create_task(
                _work(options, config, role.split(":", 1)[1], base_dir))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await agent

    asyncio.run(main())


def _ignore(report: CatchUpReport) -> None:
    return None
