"""Batches: many inputs through one flow, a bounded number in flight, results in input order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.runtime.embedded import EmbeddedRuntime


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """How far a batch has got."""

    done: int
    failed: int
    total: int


class BatchRun:
    """An async iterator of ``(index, FlowResult)`` in input order.

    Item ``i`` runs as ``{batch_id}/{i}``, so submitting a batch again under its id skips the
    items that finished and resumes the ones that did not.
    """

    def __init__(
        self,
        runtime: EmbeddedRuntime,
        flow: Flow,
        inputs: Sequence[JSON],
        variables: Mapping[str, JSON] | None = None,
        *,
        max_concurrency: int = 64,
        batch_id: str | None = None,
        resuming: bool | None = None,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.flow = flow
        self.inputs = inputs
        self.variables = variables
        self.max_concurrency = max_concurrency
        self.resuming = batch_id is not None if resuming is None else resuming
        self.batch_id = batch_id or uuid.uuid4().hex
        self.on_progress = on_progress

    def __aiter__(self) -> AsyncIterator[tuple[int, FlowResult]]:
        return self._results()

    async def _results(self) -> AsyncIterator[tuple[int, FlowResult]]:
        total = len(self.inputs)
        results: list[FlowResult | None] = [None] * total
        ready = asyncio.Event()
        slots = asyncio.Semaphore(self.max_concurrency)
        done = failed = 0

        errors: list[BaseException] = []

        async def run_item(index: int) -> None:
            nonlocal done, failed
            try:
                run_id = await self.runtime.submit(
                    self.flow, self.inputs[index], self.variables,
                    run_id=f"{self.batch_id}/{index}", batch_id=self.batch_id,
                    batch_index=index, check_existing=self.resuming,
                )
                result = await self.runtime.wait(run_id)
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                raise
            finally:
                slots.release()
            results[index] = result
            done += 1
            failed += not result.ok
            if self.on_progress is not None:
                self.on_progress(BatchProgress(done, failed, total))
            ready.set()

        async def feed() -> None:
            for index in range(total):
                await slots.acquire()
                task = asyncio.create_task(run_item(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        tasks: set[asyncio.Task[None]] = set()
        feeder = asyncio.create_task(feed())
        try:
            next_index = 0
            while next_index < total:
                result = results[next_index]
                if result is None:
                    if errors:
                        raise errors[0]
                    ready.clear()
                    await ready.wait()
                    continue
                results[next_index] = None
                yield next_index, result
                next_index += 1
        finally:
            feeder.cancel()
            for task in tasks:
                task.cancel()


def run_batch(
    runtime: EmbeddedRuntime,
    flow: Flow,
    inputs: Sequence[JSON],
    variables: Mapping[str, JSON] | None = None,
    *,
    max_concurrency: int = 64,
    batch_id: str | None = None,
    resuming: bool | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchRun:
    """Run ``inputs`` through ``flow``; iterate the result for ``(index, FlowResult)``.

    ``resuming`` (default: whether a ``batch_id`` is given) makes each item look for a run
    the journal already holds under its id."""
    return BatchRun(runtime, flow, inputs, variables, max_concurrency=max_concurrency,
                    batch_id=batch_id, resuming=resuming, on_progress=on_progress)
