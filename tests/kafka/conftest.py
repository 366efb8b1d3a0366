"""Fixtures of the Kafka tests: topic names of their own for each test, on the session's broker
(``kafka_bootstrap``, ``tests/infra_fixtures.py``), deleted after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from infra_fixtures import delete_topics

from stepflow_stream.kafka.topics import TopicNames


@pytest.fixture
async def names(kafka_bootstrap: str) -> AsyncIterator[TopicNames]:
    """Names under a prefix no other test uses; every topic under it is deleted afterwards."""
    topic_names = TopicNames(f"test-{uuid.uuid4().hex[:12]}.")
    yield topic_names
    await delete_topics(kafka_bootstrap, topic_names.prefix)
