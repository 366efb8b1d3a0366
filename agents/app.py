"""Faust apps: one for the orchestrator, one per component class for its workers.

Each role is its own app, hence its own consumer group: the orchestrator group shares out the
commands topic's partitions (and so the journal's), each worker group the partitions of its
class's task topic. Faust runs at-least-once: the orchestrator acknowledges a command itself
once the Kafka transaction holding its events has committed, and a worker acknowledges a task
once its result is on the commands topic. Delivering either again changes nothing (invariant
2), which also absorbs Faust's re-deliveries after a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from stepflow_stream.config.model import Config
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.distributed.orchestrator import CatchUpReport, Orchestrator
from stepflow_stream.distributed.worker import TaskWorker
from stepflow_stream.journal.postgres import PostgresDatabase
from stepflow_stream.kafka.topics import ensure_topics

__all__ = ["orchestrator_app", "run_app", "worker_app"]

log = logging.getLogger("stepflow_stream.agents")


def _app(options: DistributedOptions, name: str, data_dir: Path) -> faust.App:
    data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        f"{options.topic_prefix}stepflow-{name}",
        broker=[f"kafka://{server}" for server in options.bootstrap_servers.split(",")],
        processing_guarantee="at_least_once",
        broker_session_timeout=options.session_timeout_s,
        broker_heartbeat_interval=min(1.0, options.session_timeout_s / 4),
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.0,
        stream_buffer_maxsize=16384,
        topic_replication_factor=options.replication_factor,
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=str(data_dir / name),
    )


class _Lazy:
    """Something built once, on the app's event loop, by the first coroutine that needs it."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._value: Any = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Any:
        if self._value is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._value is None:
                    self._value = await self._build()
        return self._value


def orchestrator_app(
    options: DistributedOptions, config: Config, *, data_dir: Path,
    on_caught_up: Callable[[CatchUpReport], None] | None = None,
) -> faust.App:
    """The app whose agent turns commands into journal events and tasks."""
    app = _app(options, "orchestrator", data_dir)
    commands = app.topic(options.topics.commands, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    async def build() -> Orchestrator:
        database = await PostgresDatabase.connect(options.database_url)
        return Orchestrator(options, config, database, on_caught_up=on_caught_up)

    orchestrator = _Lazy(build)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust: receivers get (sender, *args, signal=...)
    async def assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[Any] = args[0] if args else kwargs.get("assigned", set())
        mine = {tp.partition for tp in assigned if tp.topic == options.topics.commands}
        current = await orchestrator.get()
        await current.revoke(set(current.partitions) - mine)
        await current.assign(mine)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        lost = {tp.partition for tp in revoked if tp.topic == options.topics.commands}
        await (await orchestrator.get()).revoke(lost)

    @app.agent(commands, name="orchestrate")
    async def orchestrate(stream: Any) -> None:
        current: Orchestrator = await orchestrator.get()
        manual = stream.noack()
        async for event in manual.events():
            message = event.message

            def ack(event: Any = event) -> Any:
                return manual.ack(event)

            await current.command(message.partition, message.value, ack)

    return app


def worker_app(
    options: DistributedOptions, config: Config, component_class: str, *, data_dir: Path,
    base_dir: Path | None = None,
) -> faust.App:
    """The app whose agent executes the tasks of ``component_class``."""
    app = _app(options, f"worker-{component_class}", data_dir)
    tasks = app.topic(options.topics.tasks(component_class), key_type=bytes,
                      value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def build() -> TaskWorker:
        database = await PostgresDatabase.connect(options.database_url, max_size=4)
        worker = TaskWorker(options, config, database, component_class, base_dir=base_dir)
        await worker.start()
        return worker

    worker = _Lazy(build)

    @app.agent(tasks, name=f"work-{component_class}",
               concurrency=options.worker(component_class).concurrency)
    async def work(stream: Any) -> None:
        current: TaskWorker = await worker.get()
        async for event in stream.events():
            await current.execute(event.message.value)

    return app


def run_app(app: faust.App, options: DistributedOptions, component_classes: list[str],
            *, loglevel: str = "info") -> None:
    """Create the topics, then run ``app`` until SIGTERM or SIGINT."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(
        options.bootstrap_servers, options.topics, options.partitions,
        options.replication_factor, component_classes=component_classes,
        task_partitions=options.task_partitions,
    ))
    worker = faust.Worker(app, loop=loop, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
