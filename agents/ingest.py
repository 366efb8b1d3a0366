"""The ingest agent: the records of an input topic fed to an
:class:`~stepflow_stream.distributed.ingest.Ingestor`, which runs them on the cluster and
produces their results (see that module for the guarantees and the record shapes).

Two drivers, as for the other agents (``stepflow-stream ingest --driver``, default the
config's ``runtime.agentDriver``):

- ``direct``: a plain aiokafka consumer group (``read_committed``). While ``max_in_flight``
  records are in flight its partitions are paused (it keeps polling, so it stays in the
  group).
- ``faust``: a Faust agent over the input topic (Faust reads ``read_uncommitted``: it reads
  ``read_committed`` only in its own exactly-once mode). Faust never commits offsets here: the
  agent acknowledges nothing, the offsets are committed in the Ingestor's transactions. While
  ``max_in_flight`` records are in flight the agent waits, and Faust's stream buffer stops
  the fetching.

In both, the consumer group is the ingest's ``group`` (the Faust app id), and a partition's
records reach the Ingestor only after it owns the partition (producer fenced, committed
offset read). Where a driver's position disagrees with the committed offset, the Ingestor
drops what is already produced and has the driver seek back over what it would miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stepflow_stream.config.model import Config
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.ingest import Ingestor, IngestSettings
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.distributed.reaching import reaching_kafka
from stepflow_stream.errors import InputError
from stepflow_stream.kafka.topics import KafkaTopicError

__all__ = ["prepare_topics", "run_ingest"]

log = logging.getLogger("stepflow_stream.agents")

_READY = "[^Worker]: Ready"
_TOPIC_ALREADY_EXISTS = 36


async def prepare_topics(options: DistributedOptions, settings: IngestSettings) -> None:
    """Check that the input topic exists and create the output (and dead-letter) topic with
    as many partitions if it does not."""
    admin = AIOKafkaAdminClient(bootstrap_servers=options.bootstrap_servers)
    async with reaching_kafka(options):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            if settings.from_topic not in existing:
                raise InputError(f"--from-topic: topic '{settings.from_topic}' does not exist "
                                 f"on {options.bootstrap_servers}")
            described = await admin.describe_topics([settings.from_topic])
            partitions = len(described[0]["partitions"])
            outputs = [settings.to_topic, settings.dead_letter_topic]
            missing = [t for t in outputs if t is not None and t not in existing]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(t, partitions, options.replication_factor) for t in missing])
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, _TOPIC_ALREADY_EXISTS):  # created meanwhile: fine
                        raise KafkaTopicError(f"cannot create topic {topic!r}: error {code}")
        finally:
            await admin.close()


def run_ingest(settings: IngestSettings, options: DistributedOptions, config: Config,
               flow: Flow, variables: Mapping[str, JSON], *, driver: str, data_dir: Path,
               loglevel: str = "info") -> None:
    """Run the ingest until SIGTERM or SIGINT."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(prepare_topics(options, settings))

    async def start() -> tuple[DistributedClient, Ingestor]:
        # Built on the loop the drivers run on: aiokafka clients belong to one loop.
        client = DistributedClient(options, config)
        await client.start()
        ingestor = Ingestor(settings, client, flow, variables)
        await ingestor.start()
        return client, ingestor

    client, ingestor = loop.run_until_complete(start())
    if driver == "direct":
        try:
            loop.run_until_complete(_run_direct(ingestor))
        finally:
            loop.run_until_complete(ingestor.stop())
            loop.run_until_complete(client.stop())
            loop.close()
        return
    import faust

    app = ingest_app(ingestor, data_dir)
    worker = faust.Worker(app, loop=loop, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


# The direct driver ----------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, ingestor: Ingestor) -> None:
        self.consumer = consumer
        self.ingestor = ingestor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.ingestor.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        topic = self.ingestor.settings.from_topic
        starts = await self.ingestor.assign({tp.partition for tp in assigned})
        for partition, offset in starts.items():
            self.consumer.seek(TopicPartition(topic, partition), offset)


async def _run_direct(ingestor: Ingestor) -> None:
    settings, options = ingestor.settings, ingestor.options
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap_servers,
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=int(options.session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(1.0, options.session_timeout_s / 4) * 1000),
    )
    consumer.subscribe([settings.from_topic], listener=_Listener(consumer, ingestor))
    await consumer.start()
    log.info("%s (ingest %s -> %s, direct driver)", _READY, settings.from_topic,
             settings.to_topic)
    task = asyncio.get_running_loop().create_task(_consume(consumer, ingestor))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await ingestor.revoke(set(ingestor.partitions))
        await consumer.stop()


async def _consume(consumer: AIOKafkaConsumer, ingestor: Ingestor) -> None:
    while True:
        room = ingestor.room
        if room <= 0:
            # Backpressure: nothing is fetched while the in-flight records fill the bound,
            # but polling goes on (a consumer that stops polling is put out of the group).
            consumer.pause(*consumer.assignment())
            await ingestor.wait_for_room(0.5)
        elif consumer.paused():
            consumer.resume(*consumer.paused())
        batches = await consumer.getmany(timeout_ms=0 if room <= 0 else 500,
                                         max_records=max(1, room))
        for tp, records in batches.items():
            for record in records:
                seek = await ingestor.take(tp.partition, record.offset, record.key,
                                           record.value)
                if seek is not None:
                    consumer.seek(tp, seek)
                    break


# The Faust driver -----------------------------------------------------------------------------


def ingest_app(ingestor: Ingestor, data_dir: Path) -> Any:
    """The Faust app whose agent hands the input topic's records to ``ingestor`` (built and
    started on the loop the app will run on)."""
    import faust
    from faust.types import TP

    settings, options = ingestor.settings, ingestor.options
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group,
        broker=[f"kafka://{server}" for server in options.bootstrap_servers.split(",")],
        processing_guarantee="at_least_once",
        broker_session_timeout=options.session_timeout_s,
        broker_heartbeat_interval=min(1.0, options.session_timeout_s / 4),
        # Offsets are committed by the Ingestor's transactions; Faust has none to commit and
        # must not warn that it has not.
        broker_commit_livelock_soft_timeout=10.0**9,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        topic_replication_factor=options.replication_factor,
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=str(data_dir / "ingest"),
    )
    topic = app.topic(settings.from_topic, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust: receivers get (sender, *args, signal=...)
    async def revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        await ingestor.revoke({tp.partition for tp in revoked
                               if tp.topic == settings.from_topic})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust: receivers get (sender, *args, signal=...)
    async def assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[Any] = args[0] if args else kwargs.get("assigned", set())
        mine = {tp.partition for tp in assigned if tp.topic == settings.from_topic}
        await ingestor.revoke(set(ingestor.partitions) - mine)
        await ingestor.assign(mine)

    @app.agent(topic, name="ingest")
    async def ingest(stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            seek = await ingestor.take(message.partition, message.offset, message.key,
                                       message.value)
            if seek is not None:
                await app.consumer.seek(TP(message.topic, message.partition), seek)

    return app
