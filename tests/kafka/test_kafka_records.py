"""The record format: keys, and a partitioner that agrees with what the broker does."""

from __future__ import annotations

import random

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from kafka_support import run_journal

from stepflow_stream.core.events import CancelRun
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.kafka.command_codec import decode_command
from stepflow_stream.kafka.records import (
    command_record,
    journal_record,
    murmur2,
    partition_for,
    run_id_of,
)
from stepflow_stream.kafka.topics import TopicNames, ensure_topics


def test_keys_are_the_utf8_run_id() -> None:
    [event] = run_journal("run-é", 0)[:1]
    key, value = journal_record(event)
    assert key == "run-é".encode()
    assert run_id_of(key) == "run-é"
    assert decode_event(value) == event
    key, value = command_record(CancelRun("run-é"))
    assert key == "run-é".encode()
    assert decode_command(value) == CancelRun("run-é")


JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}
"""murmur2 of keys, as Kafka's Java client computes it (its ``UtilsTest``)."""


@pytest.mark.parametrize(("run_id", "java_hash"), JAVA_MURMUR2.items())
def test_the_partition_is_java_murmur2_made_positive(run_id: str, java_hash: int) -> None:
    # With 2**31 partitions the partition is the positive hash itself.
    assert partition_for(run_id, 2**31) == java_hash & 0x7FFFFFFF
    assert partition_for(run_id, 7) == (java_hash & 0x7FFFFFFF) % 7


def test_murmur2_equals_aiokafkas_for_every_length_and_tail() -> None:
    rng = random.Random(7)
    for length in range(130):
        for _ in range(8):
            data = rng.randbytes(length)
            assert murmur2(data) == aiokafka_murmur2(data), data


async def test_partitioner_agrees_with_the_broker(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    partitions = 5
    await ensure_topics(kafka_bootstrap, names, partitions)
    run_ids = [f"run-{i}-ü" for i in range(40)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        placed = {
            run_id: (await producer.send_and_wait(names.commands, b"x", key=run_id.encode()))
            for run_id in run_ids
        }
    finally:
        await producer.stop()

    assert {run_id: meta.partition for run_id, meta in placed.items()} == {
        run_id: partition_for(run_id, partitions) for run_id in run_ids
    }
    assert len({meta.partition for meta in placed.values()}) == partitions
