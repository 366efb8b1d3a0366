"""Submitting runs to a running cluster, and waiting for their results.

A run is accepted once its ``SubmitRun`` is on the commands topic (acknowledged by all
in-sync replicas): from then on the orchestrator owning its partition will finish it whatever
crashes (invariant 3). Results are read from the run index in PostgreSQL, which the
orchestrator announces on a LISTEN channel as runs end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from stepflow_stream.config.model import Config
from stepflow_stream.core.events import CancelRun, Command, FlowResult, SubmitRun
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.variables import resolve_variables
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.distributed.postgres_state import RUNS_CHANNEL
from stepflow_stream.distributed.reaching import reaching_kafka, reaching_postgres
from stepflow_stream.errors import RunNotFoundError
from stepflow_stream.journal.postgres import PostgresBlobStore, PostgresDatabase, PostgresJournal
from stepflow_stream.kafka.records import command_record, partition_for
from stepflow_stream.kafka.topics import ensure_topics
from stepflow_stream.plugins.base import Plugin
from stepflow_stream.plugins.registry import create_plugins
from stepflow_stream.runtime.embedded import check_flow

__all__ = ["DistributedClient", "batch_run_id"]

_POLL_S = 1.0
"""How often a waiter looks at the run index even without a notification (one lost in a
reconnect must not leave it waiting forever)."""


def batch_run_id(batch_id: str, index: int) -> str:
    """The run id of a batch's item: derived, so a batch submitted again (resumed) names the
    same runs, and a run already accepted is not started twice."""
    return f"{batch_id}-{index}"


class DistributedClient:
    """Submits runs to the cluster of ``options`` and reads their results."""

    def __init__(self, options: DistributedOptions, config: Config) -> None:
        self.options = options
        self.config = config
        self.database: PostgresDatabase | None = None
        self._producer = AIOKafkaProducer(
            bootstrap_servers=options.bootstrap_servers, enable_idempotence=True, linger_ms=0,
            max_batch_size=512 * 1024,
        )
        self._listener: Any = None
        self._journal: PostgresJournal | None = None
        self._stored_flows: set[str] = set()
        self._plugins: dict[str, Plugin] | None = None
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def __aenter__(self) -> DistributedClient:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to Kafka (creating the topics if need be) and PostgreSQL; raises
        :class:`ServiceUnavailableError` naming the one that cannot be reached."""
        async with reaching_kafka(self.options):
            await ensure_topics(
                self.options.bootstrap_servers, self.options.topics, self.options.partitions,
                self.options.replication_factor,
            )
            await self._producer.start()
        async with reaching_postgres(self.options):
            self.database = await PostgresDatabase.connect(self.options.database_url)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # never started, or the broker went away
            await self._producer.stop()
        if self._listener is not None:
            await self._listener.close()
        if self.database is not None:
            await self.database.close()

    @property
    def journal(self) -> PostgresJournal:
        assert self.database is not None, "start() the client first"
        if self._journal is None:
            self._journal = PostgresJournal(self.database)
        return self._journal

    def check_flow(self, flow: Flow) -> None:
        """Reject a flow the cluster could not run, as the embedded runtime does: a component
        that no route reaches, or that every plugin it is routed to says it lacks (the
        plugins are built from the config but not started: no server is contacted)."""
        if self._plugins is None:
            self._plugins = create_plugins(self.config, Path.cwd())
        check_flow(flow, self.config, self._plugins)

    async def submit(
        self,
        flow: Flow,
        input: JSON,
        variables: Mapping[str, JSON] | None = None,
        *,
        run_id: str | None = None,
        batch_id: str | None = None,
        batch_index: int | None = None,
        parent_run_id: str | None = None,
        forked_from_step: str | None = None,
        reused: JSONObject | None = None,
    ) -> str:
        """Store the flow, send the run's SubmitRun, and return its id once Kafka has it.

        Submitting a run id again starts nothing new. Secret variables are checked here but
        not sent: the orchestrator reads them from its own environment. A fork names its
        parent run, the step it runs from and the recorded outputs it reuses.
        """
        assert self.database is not None, "start() the client first"
        resolved = resolve_variables(flow, variables or {}, os.environ)
        await self._store_flow(flow)
        run_id = run_id or uuid.uuid4().hex
        await self.send(SubmitRun(
            run_id=run_id, flow_id=flow.flow_id, input=input, variables=resolved.redacted(),
            batch_id=batch_id, batch_index=batch_index, parent_run_id=parent_run_id,
            forked_from_step=forked_from_step, reused=reused or {},
        ))
        return run_id

    async def submit_many(
        self,
        flow: Flow,
        inputs: Sequence[JSON],
        variables: Mapping[str, JSON] | None = None,
        *,
        run_ids: Sequence[str] | None = None,
        batch_id: str | None = None,
        indexes: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """Submit one run per input, in record batches per partition (far cheaper than one
        :meth:`submit` each); returns the run ids, in input order, once Kafka has them all.

        With ``batch_id``, the inputs are the items ``indexes`` of that batch (default
        0, 1, ...: a batch may be sent in several parts), each run gets the batch id and its
        index, and its run id is :func:`batch_run_id` unless ``run_ids`` are given: submitting
        a batch again runs only the items that were never accepted. The batch's size
        (``batch_size``, else the highest index seen so far + 1) is recorded for its progress.
        """
        assert self.database is not None, "start() the client first"
        if run_ids is not None and len(run_ids) != len(inputs):
            raise ValueError(f"{len(run_ids)} run ids for {len(inputs)} inputs")
        resolved = resolve_variables(flow, variables or {}, os.environ).redacted()
        await self._store_flow(flow)
        positions = list(indexes) if indexes is not None else list(range(len(inputs)))
        if len(positions) != len(inputs):
            raise ValueError(f"{len(positions)} batch indexes for {len(inputs)} inputs")
        if run_ids is not None:
            ids = list(run_ids)
        elif batch_id is not None:
            ids = [batch_run_id(batch_id, index) for index in positions]
        else:
            ids = [uuid.uuid4().hex for _ in inputs]
        if batch_id is not None and inputs:
            await self.record_batch(batch_id, flow.flow_id, batch_size or max(positions) + 1)
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for index, run_id, input in zip(positions, ids, inputs, strict=True):
            command = SubmitRun(
                run_id=run_id, flow_id=flow.flow_id, input=input, variables=resolved,
                batch_id=batch_id, batch_index=index if batch_id is not None else None,
            )
            partition = partition_for(run_id, self.options.partitions)
            by_partition.setdefault(partition, []).append(command_record(command))
        deliveries = []
        for partition, records in by_partition.items():
            builder = self._producer.create_batch()
            for key, value in records:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    deliveries.append(await self._producer.send_batch(
                        builder, self.options.topics.commands, partition=partition))
                    builder = self._producer.create_batch()
                    builder.append(key=key, value=value, timestamp=None)
            deliveries.append(await self._producer.send_batch(
                builder, self.options.topics.commands, partition=partition))
        await asyncio.gather(*deliveries)
        return ids

    async def record_batch(self, batch_id: str, flow_id: str, size: int) -> None:
        """Record that the batch has (at least) ``size`` items."""
        assert self.database is not None, "start() the client first"
        await self.database.pool.execute(
            "INSERT INTO batches (batch_id, flow_id, size, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (batch_id) DO UPDATE SET size = greatest(batches.size, excluded.size)",
            batch_id, flow_id, size, int(time.time() * 1000),
        )

    async def _store_flow(self, flow: Flow) -> None:
        """Check the flow and store it where the orchestrator finds it by id (once)."""
        assert self.database is not None, "start() the client first"
        if flow.flow_id not in self._stored_flows:
            self.check_flow(flow)
            await PostgresBlobStore(self.database).put(flow.document, "flow")
            self._stored_flows.add(flow.flow_id)

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> None:
        await self.send(CancelRun(run_id, reason))

    async def send(self, command: Command) -> None:
        key, value = command_record(command)
        await (await self._producer.send(self.options.topics.commands, value, key=key))

    async def result(self, run_id: str) -> FlowResult | None:
        """The run's result if it has ended; raises RunNotFoundError for an unknown id."""
        summary = await self.journal.get_run(run_id)
        if summary is None:
            raise RunNotFoundError(f"no run with id '{run_id}'")
        return summary.result

    async def wait(self, run_id: str, timeout_s: float | None = None) -> FlowResult:
        """The run's FlowResult once it has ended (a run just submitted may not be in the run
        index yet: it is waited for, not reported unknown)."""
        await self._listen()
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            woken = loop.create_future()
            self._waiters.setdefault(run_id, []).append(woken)
            try:
                summary = await self.journal.get_run(run_id)
                if summary is not None and summary.result is not None:
                    return summary.result
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"run {run_id} has not ended after {timeout_s:g} s")
                wait_s = _POLL_S if remaining is None else min(_POLL_S, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(woken), wait_s)
            finally:
                waiters = self._waiters.get(run_id, [])
                if woken in waiters:
                    waiters.remove(woken)
                if not waiters:
                    self._waiters.pop(run_id, None)

    async def _listen(self) -> None:
        if self._listener is not None:
            return
        self._listener = await asyncpg.connect(self.options.database_url)

        def notified(_connection: Any, _pid: int, _channel: str, run_id: str) -> None:
            for waiter in self._waiters.get(run_id, []):
                if not waiter.done():
                    waiter.set_result(None)

        await self._listener.add_listener(RUNS_CHANNEL, notified)
