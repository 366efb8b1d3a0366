"""The topics of the distributed runtime, their names and their creation.

``commands`` and ``journal`` are keyed by run id and have the same partition count, so the
orchestrator owning commands partition *p* is the one writer of journal partition *p*. The
journal is the record of truth: it is never deleted by age.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from stepflow_stream.errors import StepflowError

__all__ = ["KafkaTopicError", "TopicNames", "ensure_topics"]

_TOPIC_ALREADY_EXISTS = 36
_NOT_YET_KNOWN = frozenset({3, 5})
"""UNKNOWN_TOPIC_OR_PARTITION and LEADER_NOT_AVAILABLE: what a topic being created reports."""
_METADATA_WAIT_S = 10.0
_JOURNAL_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


class KafkaTopicError(StepflowError):
    """A topic that cannot be created, or exists with another partition count than expected."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The topic names of one deployment: ``{prefix}stepflow.commands`` and so on."""

    prefix: str = ""
    """Prepended to every name, so deployments (or tests) can share one cluster."""

    @property
    def commands(self) -> str:
        return f"{self.prefix}stepflow.commands"

    @property
    def journal(self) -> str:
        return f"{self.prefix}stepflow.journal"

    def tasks(self, component_class: str) -> str:
        """The topic of the tasks of one plugin or component class."""
        return f"{self.prefix}stepflow.tasks.{component_class}"


async def ensure_topics(
    bootstrap: str,
    names: TopicNames,
    partitions: int,
    replication: int = 1,
    *,
    component_classes: Iterable[str] = (),
    task_partitions: int | None = None,
) -> None:
    """Create the commands and journal topics with ``partitions`` partitions, and the task
    topics of ``component_classes`` with ``task_partitions`` (default: ``partitions``), unless
    they exist; check that those that exist have those counts. Calling it again changes
    nothing."""
    task_partitions = partitions if task_partitions is None else task_partitions
    if min(partitions, task_partitions) < 1:
        raise KafkaTopicError(f"partitions must be at least 1, not {partitions}")
    wanted: dict[str, tuple[dict[str, str], int]] = {
        names.commands: ({}, partitions), names.journal: (_JOURNAL_CONFIG, partitions),
    }
    wanted.update({names.tasks(cls): ({}, task_partitions) for cls in component_classes})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(name, wanted[name][1], replication, topic_configs=wanted[name][0])
                 for name in missing]
            )
            _raise_creation_errors(response)
        described = await _describe_when_known(admin, list(wanted))
    finally:
        await admin.close()
    _check_partition_counts(described, {name: count for name, (_, count) in wanted.items()})


def _raise_creation_errors(response: Any) -> None:
    # Another process may have created the topic since we listed: that is what we wanted.
    for topic, code, *rest in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            message = rest[0] if rest and rest[0] else for_code(code).__name__
            raise KafkaTopicError(f"cannot create topic {topic!r}: {message}")


async def _describe_when_known(admin: Any, topics: list[str]) -> list[dict[str, Any]]:
    """The metadata of ``topics``, once every broker answer knows them: a topic just created
    reaches the broker's metadata a moment after the controller acknowledged it."""
    deadline = asyncio.get_running_loop().time() + _METADATA_WAIT_S
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        pending = any(topic["error_code"] in _NOT_YET_KNOWN for topic in described)
        if not pending or asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.1)


def _check_partition_counts(described: list[dict[str, Any]], expected: dict[str, int]) -> None:
    for topic in described:
        if topic["error_code"] != 0:
            error = for_code(topic["error_code"]).__name__
            raise KafkaTopicError(f"cannot describe topic {topic['topic']!r}: {error}")
        found = len(topic["partitions"])
        partitions = expected[topic["topic"]]
        if found != partitions:
            raise KafkaTopicError(
                f"topic {topic['topic']!r} has {found} partitions, expected {partitions} "
                "(the orchestrator parallelism, which commands and journal must share)"
            )
