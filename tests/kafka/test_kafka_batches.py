"""Producing in record batches (``stepflow_stream.kafka.batches``), on a real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from stepflow_stream.kafka.batches import BatchingSender, send_batched
from stepflow_stream.kafka.records import key_partition
from stepflow_stream.kafka.topics import TopicNames, ensure_topics

PARTITIONS = 3


async def _read_all(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        read: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.key is not None and record.value is not None
                    read[tp.partition].append((record.key, record.value))
        return read
    finally:
        await consumer.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str, names: TopicNames) -> str:
    await ensure_topics(kafka_bootstrap, names, PARTITIONS)
    return names.commands


async def test_records_sent_concurrently_arrive_once_in_order_in_their_key_partition(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sender = BatchingSender(producer, topic, PARTITIONS)
        sent: list[tuple[bytes, bytes]] = []

        async def one(i: int) -> None:
            await asyncio.sleep((i % 7) / 1000)  # senders spread over several loop passes
            record = (f"run-{i % 23}".encode(), f"value-{i}".encode())
            sent.append(record)
            await sender.send(*record)

        await asyncio.gather(*(one(i) for i in range(2000)))
    finally:
        await producer.stop()
    read = await _read_all(kafka_bootstrap, topic)
    assert sum(len(records) for records in read.values()) == len(sent)
    for partition, records in read.items():
        # Each partition holds exactly its keys' records, in the order they were sent.
        assert records == [r for r in sent if key_partition(r[0], PARTITIONS) == partition]
    assert len(read) == PARTITIONS


async def test_a_record_too_large_fails_alone(kafka_bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=16 * 1024,
                                request_timeout_ms=10_000)
    await producer.start()
    try:
        sender = BatchingSender(producer, topic, PARTITIONS)
        small = [sender.send(b"run-1", f"small-{i}".encode()) for i in range(10)]
        large = sender.send(b"run-1", b"x" * 2_000_000)  # over the broker's message.max.bytes
        fits_alone = sender.send(b"run-1", b"y" * 20_000)  # over a batch, under the broker's
        outcomes = await asyncio.gather(*small, large, fits_alone, return_exceptions=True)
    finally:
        await producer.stop()
    assert outcomes[:10] == [None] * 10
    assert isinstance(outcomes[10], KafkaError), outcomes[10]
    assert outcomes[11] is None
    values = [v for records in (await _read_all(kafka_bootstrap, topic)).values()
              for _, v in records]
    assert values == [f"small-{i}".encode() for i in range(10)] + [b"y" * 20_000]


async def test_send_batched_returns_the_last_offset_across_several_batches(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=16 * 1024)
    await producer.start()
    try:
        records = [(b"k", f"{i:0>1000}".encode()) for i in range(100)]  # ~7 batches
        first = await (await send_batched(producer, topic, 1, records[:1]))
        last = await (await send_batched(producer, topic, 1, records[1:]))
    finally:
        await producer.stop()
    assert (first, last) == (0, 99)
    assert (await _read_all(kafka_bootstrap, topic))[1] == records


async def test_send_batched_puts_a_record_larger_than_a_batch_alone_in_its_place(
    kafka_bootstrap: str, topic: str
) -> None:
    # An event of a few hundred KB (a large step output) is larger than the orchestrator's
    # batches: it is alone in one, in order, and the last offset still counts every record.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=16 * 1024)
    await producer.start()
    try:
        records = [(b"k", b"a" * 100), (b"k", b"b" * 100), (b"k", b"L" * 40_000),
                   (b"k", b"c" * 100), (b"k", b"M" * 40_000)]
        last = await (await send_batched(producer, topic, 2, records))
        with pytest.raises(ValueError, match="at least one record"):
            await send_batched(producer, topic, 2, [])
    finally:
        await producer.stop()
    assert last == len(records) - 1
    assert (await _read_all(kafka_bootstrap, topic))[2] == records
