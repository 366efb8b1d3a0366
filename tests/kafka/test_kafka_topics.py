"""Creating the runtime's topics on a real broker: idempotent, and loud about a mismatch."""

from __future__ import annotations

import re

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stepflow_stream.kafka.topics import KafkaTopicError, TopicNames, ensure_topics


def test_names_carry_the_prefix() -> None:
    names = TopicNames("dev.")
    assert names.commands == "dev.stepflow.commands"
    assert names.journal == "dev.stepflow.journal"
    assert names.tasks("python") == "dev.stepflow.tasks.python"
    assert TopicNames().journal == "stepflow.journal"


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def _journal_retention(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    return {entry[0]: entry[1] for entry in entries}["retention.ms"]


async def test_creates_the_topics_and_is_idempotent(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    await ensure_topics(kafka_bootstrap, names, 3, component_classes=["python"])
    await ensure_topics(kafka_bootstrap, names, 3, component_classes=["python"])

    topics = [names.commands, names.journal, names.tasks("python")]
    assert await _partition_counts(kafka_bootstrap, topics) == dict.fromkeys(topics, 3)
    assert await _journal_retention(kafka_bootstrap, names.journal) == "-1"


async def test_a_partition_count_mismatch_names_the_topic(
    kafka_bootstrap: str, names: TopicNames
) -> None:
    await ensure_topics(kafka_bootstrap, names, 2)

    topic = rf"'{re.escape(names.prefix)}stepflow\.(commands|journal)'"
    with pytest.raises(KafkaTopicError, match=rf"{topic} has 2 partitions, expected 4"):
        await ensure_topics(kafka_bootstrap, names, 4)


async def test_zero_partitions_is_refused(kafka_bootstrap: str, names: TopicNames) -> None:
    with pytest.raises(KafkaTopicError, match="at least 1"):
        await ensure_topics(kafka_bootstrap, names, 0)
