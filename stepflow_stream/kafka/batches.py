"""Producing many records for the price of a few calls.

aiokafka's ``send`` costs several microseconds of Python per record (a future, the partitioner,
the accumulator's checks). Records built into a batch with ``create_batch`` and handed over with
``send_batch`` cost a fraction of that: :func:`send_batched` does it for records of one
partition, and :class:`BatchingSender` gathers records sent one by one during an event-loop pass
into one such batch per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from stepflow_stream.kafka.records import key_partition

__all__ = ["BatchingSender", "send_batched"]


def _batches(producer: AIOKafkaProducer,
             records: Sequence[tuple[bytes, bytes]]) -> Iterator[tuple[BatchBuilder, range]]:
    """``records`` (key, value) packed in order into as few record batches as fit, each with
    the indexes of the records it holds. A record larger than a batch is alone in one: an
    empty batch takes any one record, and a full one takes no more."""
    builder = producer.create_batch()
    first = 0
    for index, (key, value) in enumerate(records):
        if builder.append(key=key, value=value, timestamp=None) is not None:
            continue
        yield builder, range(first, index)
        builder, first = producer.create_batch(), index
        if builder.append(key=key, value=value, timestamp=None) is None:
            raise ValueError(f"a record of {len(value)} bytes does not fit in an empty batch")
    if len(records) > first:
        yield builder, range(first, len(records))


async def send_batched(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[tuple[bytes, bytes]]
) -> Awaitable[int]:
    """Queue ``records`` (key, value; at least one) for one partition, in order, in as few
    record batches as fit; returns what resolves to the last record's offset once the broker
    has them all."""
    if not records:
        raise ValueError("send_batched needs at least one record")
    deliveries = [(await producer.send_batch(batch, topic, partition=partition), len(indexes))
                  for batch, indexes in _batches(producer, records)]

    async def last_offset() -> int:
        delivery, count = deliveries[-1]
        metadata = await delivery
        await asyncio.gather(*(d for d, _ in deliveries))
        base: int = metadata.offset
        return base + count - 1

    return last_offset()


_Pending = tuple[bytes, bytes, "asyncio.Future[None]"]


class BatchingSender:
    """Sends keyed records to one topic: the records sent during one pass of the event loop go
    out together, one record batch per partition (the partition Kafka's default partitioner
    gives the key), in the order they were sent.

    Meant for many concurrent senders, each awaiting its own record (a worker's tasks sending
    their results): each pays a list append instead of a ``send``.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self.topic = topic
        self._producer = producer
        self._partitions = partitions
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue the record; the future completes once the broker has it (or fails as the
        send did)."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()
        self._pending.append((key, value, delivered))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return delivered

    async def drain(self) -> None:
        """Wait until everything sent so far has been handed to the producer (whose ``stop``
        then delivers it)."""
        while self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                by_partition: dict[int, list[_Pending]] = {}
                for record in pending:
                    partition = key_partition(record[0], self._partitions)
                    by_partition.setdefault(partition, []).append(record)
                for partition, records in by_partition.items():
                    await self._send(partition, records)
        finally:
            self._flusher = None

    async def _send(self, partition: int, records: list[_Pending]) -> None:
        for batch, indexes in _batches(self._producer, [(k, v) for k, v, _ in records]):
            members = [records[index][2] for index in indexes]
            try:
                delivery = await self._producer.send_batch(batch, self.topic,
                                                           partition=partition)
            except Exception as exc:  # a stopped producer
                _settle(members, exc)
            else:
                self._settle_on(delivery, members)

    def _settle_on(self, delivery: asyncio.Future[Any],
                   members: list[asyncio.Future[None]]) -> None:
        """Settle ``members`` as ``delivery`` ends."""

        def settle(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                for member in members:
                    member.cancel()
            else:
                _settle(members, done.exception())

        delivery.add_done_callback(settle)


def _settle(members: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for member in members:
        if member.done():
            continue  # its sender stopped waiting
        if error is None:
            member.set_result(None)
        else:
            member.set_exception(error)
