"""Appending events to the journal topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from stepflow_stream.core.events import Event
from stepflow_stream.kafka.records import journal_record
from stepflow_stream.kafka.topics import TopicNames

__all__ = ["KafkaJournalProducer"]


class KafkaJournalProducer:
    """Produces events to the journal topic, keyed by run id.

    The producer is idempotent, so a retried send neither duplicates nor reorders events
    (invariant 7). With a ``transactional_id`` (one per journal partition) a newer producer of
    the same id fences this one; appends then belong in :meth:`transaction`.
    """

    def __init__(
        self, bootstrap: str, names: TopicNames, *, transactional_id: str | None = None
    ) -> None:
        self.topic = names.journal
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            transactional_id=transactional_id,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> KafkaJournalProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A transaction, committed on leaving, aborted if the block raises."""
        transaction: AbstractAsyncContextManager[Any] = self._producer.transaction()
        return transaction

    async def append(self, events: Iterable[Event]) -> None:
        """Produce ``events`` in order and wait until the broker has them all (within a
        transaction: until they are written, to be visible once it commits)."""
        deliveries = []
        for event in events:
            key, value = journal_record(event)
            deliveries.append(await self._producer.send(self.topic, value, key=key))
        await asyncio.gather(*deliveries)
