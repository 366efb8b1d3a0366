"""Fixtures of the Kafka tests: topic names of their own for each test, on the session's broker
(``kafka_bootstrap``, ``tests/infra_fixtures.py``), deleted after it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from stepflow_stream.kafka.topics import TopicNames


@pytest.fixture
async def names(kafka_bootstrap: str) -> AsyncIterator[TopicNames]:
    """Names under a prefix no other test uses; every topic under it is deleted afterwards."""
    topic_names = TopicNames(f"test-{uuid.uuid4().hex[:12]}.")
    yield topic_names
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(topic_names.prefix)]
        if ours:
            # Leftover topics only cost the broker some files; a failed cleanup fails no test.
            with contextlib.suppress(Exception):
                await admin.delete_topics(ours)
    finally:
        await admin.close()
