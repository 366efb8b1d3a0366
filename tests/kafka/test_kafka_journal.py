"""Writing runs to the journal topic and reading them back, on a real broker."""

from __future__ import annotations

import pytest
from kafka_support import run_journal

from stepflow_stream.core.events import Event
from stepflow_stream.core.state import fold
from stepflow_stream.kafka.journal_reader import read_partition, read_run_from_kafka
from stepflow_stream.kafka.journal_writer import KafkaJournalProducer
from stepflow_stream.kafka.records import partition_for
from stepflow_stream.kafka.topics import TopicNames, ensure_topics

PARTITIONS = 3


class Rollback(Exception):
    """Raised in a transaction to abort it."""


def interleaved(*journals: list[Event]) -> list[Event]:
    """The events of several runs, round robin: as an orchestrator appends them."""
    longest = max(len(journal) for journal in journals)
    return [journal[i] for i in range(longest) for journal in journals if i < len(journal)]


@pytest.fixture
async def journal_names(kafka_bootstrap: str, names: TopicNames) -> TopicNames:
    await ensure_topics(kafka_bootstrap, names, PARTITIONS)
    return names


async def test_a_run_reads_back_as_written(
    kafka_bootstrap: str, journal_names: TopicNames
) -> None:
    journals = {f"run-{i}": run_journal(f"run-{i}", steps=i + 1) for i in range(6)}
    async with KafkaJournalProducer(kafka_bootstrap, journal_names) as producer:
        await producer.append(interleaved(*journals.values()))

    for run_id, written in journals.items():
        read = await read_run_from_kafka(kafka_bootstrap, journal_names, run_id, PARTITIONS)
        assert read == written
        assert [event.seq for event in read] == list(range(len(written)))
        assert fold(run_id, read) == fold(run_id, written)
    assert await read_run_from_kafka(kafka_bootstrap, journal_names, "nobody", PARTITIONS) == []


async def test_an_aborted_transaction_is_not_read(
    kafka_bootstrap: str, journal_names: TopicNames
) -> None:
    written = run_journal("run-tx", steps=2)
    transactional_id = f"{journal_names.prefix}orchestrator-0"
    async with KafkaJournalProducer(
        kafka_bootstrap, journal_names, transactional_id=transactional_id
    ) as producer:
        async with producer.transaction():
            await producer.append(written[:3])
        with pytest.raises(Rollback):
            async with producer.transaction():
                await producer.append(run_journal("run-tx", steps=5)[3:])
                raise Rollback
        async with producer.transaction():
            await producer.append(written[3:])

    read = await read_run_from_kafka(kafka_bootstrap, journal_names, "run-tx", PARTITIONS)
    assert read == written
    assert fold("run-tx", read) == fold("run-tx", written)


async def test_read_partition_catches_up_from_an_offset(
    kafka_bootstrap: str, journal_names: TopicNames
) -> None:
    written = run_journal("run-p", steps=3)
    partition = partition_for("run-p", PARTITIONS)
    async with KafkaJournalProducer(kafka_bootstrap, journal_names) as producer:
        await producer.append(written)

    read = [item async for item in read_partition(
        kafka_bootstrap, journal_names.journal, partition, 0)]
    assert [event for _, event in read] == written
    offsets = [offset for offset, _ in read]
    assert offsets == sorted(offsets)

    tail = [event async for _, event in read_partition(
        kafka_bootstrap, journal_names.journal, partition, offsets[4])]
    assert tail == written[4:]
    end = offsets[-1] + 1
    assert [item async for item in read_partition(
        kafka_bootstrap, journal_names.journal, partition, end)] == []
