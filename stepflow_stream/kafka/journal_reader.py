"""Reading the journal topic: one partition up to its end, or one run's events.

Reads are ``read_committed``: events of an aborted transaction (a fenced orchestrator's) are
never seen, and the end is the last stable offset, so an open transaction's events are not
read either. The end is taken once, when reading starts: what is appended later is for the
next read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stepflow_stream.core.events import Event
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.kafka.records import partition_for, run_key
from stepflow_stream.kafka.topics import TopicNames

__all__ = ["read_partition", "read_run_from_kafka"]

_POLL_TIMEOUT_MS = 1000


async def read_partition(
    bootstrap: str, topic: str, partition: int, from_offset: int = 0
) -> AsyncIterator[tuple[int, Event]]:
    """The offset and event of each committed record of ``topic``'s ``partition`` from
    ``from_offset`` up to the end offset when the read starts: what an orchestrator folds to
    catch up before it acts."""
    async for record in _read_records(bootstrap, topic, partition, from_offset):
        yield record.offset, decode_event(_value(record))


async def read_run_from_kafka(
    bootstrap: str, names: TopicNames, run_id: str, partitions: int
) -> list[Event]:
    """All committed events of ``run_id``, in seq order, read from the start of its journal
    partition (``partitions`` is the journal topic's partition count); for replay without
    Postgres. An empty list when the journal holds no event of the run."""
    key = run_key(run_id)
    partition = partition_for(run_id, partitions)
    events: list[Event] = []
    async for record in _read_records(bootstrap, names.journal, partition, 0):
        if record.key != key:
            continue
        event = decode_event(_value(record))
        # One writer per partition appends a run's events in seq order (invariant 6): a record
        # out of that order means the journal itself is broken, which replay must not hide.
        if event.seq != len(events):
            raise JournalError(
                f"run {run_id!r}: event seq {event.seq} at offset {record.offset} of "
                f"{names.journal}[{partition}], expected seq {len(events)}"
            )
        events.append(event)
    return events


async def _read_records(
    bootstrap: str, topic: str, partition: int, from_offset: int
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if from_offset >= end:
            return
        consumer.seek(tp, from_offset)
        # The position, not the last record's offset, tells the end is reached: transaction
        # markers and aborted records take offsets that yield no record.
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=_POLL_TIMEOUT_MS)
            for record in batches.get(tp, []):
                if record.offset >= end:
                    return
                yield record
    finally:
        await consumer.stop()


def _value(record: ConsumerRecord[bytes, bytes]) -> bytes:
    value: bytes | None = record.value
    if value is None:
        raise JournalError(
            f"a record without a value at offset {record.offset} of "
            f"{record.topic}[{record.partition}]"
        )
    return value
