"""The worker of one component class: executes tasks and sends their results as commands.

A task is the ``StepStarted`` event that decided it (with the real input where the journal
holds a redacted one), taken from ``stepflow.tasks.<class>``. Its result goes to the commands
topic, keyed by run id, as a ``TaskResult`` carrying the task id: a task executed twice (a
worker died before its offset was committed) sends two results, and the orchestrator applies
the first only.

Sub-flows (``/builtin/eval``, ``/map``, ``/iterate``) run inside the worker, on an embedded
runtime with an in-memory journal: a retried task runs them again from the start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stepflow_stream.config.model import Config
from stepflow_stream.core.events import ErrorInfo, FlowResult, StepStarted, TaskResult
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.errors import ComponentError, ErrorCode, FlowError, JournalError
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.journal.memory import MemoryJournal
from stepflow_stream.journal.postgres import PostgresBlobStore, PostgresDatabase
from stepflow_stream.kafka.batches import BatchingSender
from stepflow_stream.kafka.records import command_record
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime, call_plugin
from stepflow_stream.runtime.task_context import BlobTaskContext

__all__ = ["TaskWorker"]

log = logging.getLogger("stepflow_stream.worker")


class TaskWorker:
    """Executes the tasks of ``component_class`` (a plugin name of the config)."""

    def __init__(
        self,
        options: DistributedOptions,
        config: Config,
        database: PostgresDatabase,
        component_class: str,
        *,
        base_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.options = options
        self.component_class = component_class
        self.settings = options.worker(component_class)
        self.blobs = PostgresBlobStore(database)
        embedded = EmbeddedOptions(max_concurrency=max(self.settings.concurrency, 8),
                                   base_dir=base_dir or Path.cwd(), gc_threshold=None)
        if env is not None:
            embedded = EmbeddedOptions(max_concurrency=embedded.max_concurrency,
                                       base_dir=embedded.base_dir, env=dict(env),
                                       gc_threshold=None)
        self.runtime = EmbeddedRuntime(config, MemoryJournal(), self.blobs, embedded)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=options.bootstrap_servers, enable_idempotence=True, linger_ms=0
        )
        self.results = BatchingSender(self.producer, options.topics.commands, options.partitions)
        self.executed = 0

    async def start(self) -> None:
        await self.runtime.start()
        await self.producer.start()

    async def stop(self) -> None:
        await self.results.drain()
        await self.producer.stop()
        await self.runtime.stop()

    async def execute(self, value: bytes) -> None:
        """Execute one task record and wait until its result is on the commands topic. A
        record that is no task is logged and skipped: it has no run to report to, and failing
        on it would hold its partition's offsets back for good."""
        try:
            event = decode_event(value)
        except JournalError as exc:
            log.error("skipped a task record that is not an event: %s (%d bytes)", exc,
                      len(value))
            return
        if not isinstance(event, StepStarted):
            log.error("skipped a task record that holds a %s, not a StepStarted (run %r)",
                      type(event).__name__, event.run_id)
            return
        result = await self._result(event)
        await self.results.send(*command_record(result))
        self.executed += 1

    async def _result(self, event: StepStarted) -> TaskResult:
        plugin = self.runtime.plugins.get(event.plugin)
        if plugin is None:
            return TaskResult(event.run_id, event.task_id, error=ErrorInfo(
                ErrorCode.INTERNAL,
                f"worker of class '{self.component_class}' has no plugin '{event.plugin}'"))
        context = _WorkerContext(self, event)
        try:
            # asyncio.timeout, not wait_for: no task of its own for every call.
            async with asyncio.timeout(self.settings.timeout_s):
                return await call_plugin(plugin, event, context)
        except TimeoutError:
            message = (f"step '{event.step_id}' ({event.component}) did not finish within "
                       f"{self.settings.timeout_s:g} s")
            return TaskResult(event.run_id, event.task_id,
                              error=ErrorInfo(ErrorCode.TIMEOUT, message), retryable=True)


class _WorkerContext(BlobTaskContext):
    """The ExecutionContext of a task on a worker: blobs in Postgres, sub-flows in-process."""

    __slots__ = ("_sub_runs", "_worker")

    def __init__(self, worker: TaskWorker, event: StepStarted) -> None:
        super().__init__(event, worker.blobs)
        self._worker = worker
        self._sub_runs = 0

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> tuple[FlowResult, str]:
        try:
            sub_flow = parse_flow(flow, source=f"sub-flow of step '{self.step_id}'")
        except FlowError as exc:
            raise ComponentError(ErrorCode.INVALID_INPUT, str(exc), retryable=False) from None
        self._sub_runs += 1
        runtime = self._worker.runtime
        run_id = await runtime.submit(
            sub_flow, input, run_id=f"{self.task_id}/{self._sub_runs}",
            parent_run_id=self.run_id, parent_step_id=self.step_id,
        )
        return await runtime.wait(run_id), run_id
