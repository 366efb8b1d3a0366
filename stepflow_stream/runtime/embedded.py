"""The embedded runtime: the core's command -> journal loop in one process.

Commands are handled as they arrive, on the event loop: the scheduler turns each into events,
which are applied to the run's in-memory state, handed to the journal (group commit) and, for
every ``StepStarted``, dispatched as a task. Callers are answered only from durable state: a
submit returns once its ``RunCreated`` is committed, a result once its terminal event is. A
crash loses at most work that nobody was told about; ``resume_unfinished`` picks the journal up
again and re-dispatches the tasks whose results were not recorded (at-least-once execution,
each result applied once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from stepflow_stream.config import Config
from stepflow_stream.core.events import (
    CancelRun,
    Command,
    ErrorInfo,
    FlowResult,
    StepStarted,
    SubmitRun,
    TaskResult,
)
from stepflow_stream.core.flow import Flow, parse_flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.scheduler import RunPlan, decide, handle, task_input
from stepflow_stream.core.state import RunState, fold
from stepflow_stream.core.variables import resolve_variables
from stepflow_stream.errors import (
    ComponentError,
    ConfigError,
    ErrorCode,
    FlowError,
    Location,
    RunNotFoundError,
)
from stepflow_stream.journal.base import BlobStore, Journal
from stepflow_stream.plugins.base import ExecutionContext, Plugin
from stepflow_stream.plugins.registry import create_plugins
from stepflow_stream.runtime.task_context import BlobTaskContext


@dataclass(frozen=True, slots=True)
class EmbeddedOptions:
    """Settings of an :class:`EmbeddedRuntime`."""

    max_concurrency: int = 256
    """Most component calls in flight at once, across all runs (sub-runs included)."""
    base_dir: Path = field(default_factory=Path.cwd)
    """The directory ``/builtin/load_file`` is confined to."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    """Where ``env_var`` variables and secrets are read from."""
    gc_threshold: int | None = 100_000
    """Allocations between young-generation collections while the runtime runs (None: leave
    the interpreter's setting). Runs allocate many short-lived objects; with Python's default
    of 700 the collector walks a large heap so often that it costs about 20% of throughput."""


_FINISHED_KEPT = 10_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _ActiveRun:
    __slots__ = ("done", "plan", "state")

    def __init__(self, state: RunState, plan: RunPlan) -> None:
        self.state = state
        self.plan = plan
        self.done: asyncio.Future[FlowResult] = asyncio.get_running_loop().create_future()


class EmbeddedRuntime:
    """Runs flows in this process against a journal and a blob store."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        blobs: BlobStore,
        options: EmbeddedOptions | None = None,
        plugins: Mapping[str, Plugin] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.blobs = blobs
        self.options = options or EmbeddedOptions()
        self.plugins = dict(plugins) if plugins is not None else create_plugins(
            config, self.options.base_dir
        )
        self._active: dict[str, _ActiveRun] = {}
        # Runs that finished recently, so a wait() right after the end needs no journal read.
        self._finished: OrderedDict[str, _ActiveRun] = OrderedDict()
        self._plans: dict[str, RunPlan] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.options.max_concurrency)
        self._saved_gc_threshold: tuple[int, int, int] | None = None

    async def __aenter__(self) -> EmbeddedRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the plugins."""
        if self.options.gc_threshold is not None:
            self._saved_gc_threshold = gc.get_threshold()
            gc.set_threshold(self.options.gc_threshold, *self._saved_gc_threshold[1:])
        for plugin in self.plugins.values():
            await plugin.start()

    async def stop(self) -> None:
        """Cancel tasks still running, stop plugins, flush the journal."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for plugin in self.plugins.values():
            await plugin.stop()
        await self.journal.close()
        if self._saved_gc_threshold is not None:
            gc.set_threshold(*self._saved_gc_threshold)
            self._saved_gc_threshold = None

    # Flows ------------------------------------------------------------------------------------

    def check_flow(self, flow: Flow) -> None:
        """Reject a flow whose components no route reaches or no plugin offers."""
        check_flow(flow, self.config, self.plugins)

    async def _plan(self, flow: Flow) -> RunPlan:
        plan = self._plans.get(flow.flow_id)
        if plan is None:
            self.check_flow(flow)
            await self.blobs.put(flow.document, "flow")
            plan = self._plans[flow.flow_id] = RunPlan(flow, self.config.routes)
        return plan

    async def _plan_by_id(self, flow_id: str) -> RunPlan:
        plan = self._plans.get(flow_id)
        if plan is None:
            try:
                document = await self.blobs.get(flow_id)
            except KeyError:
                raise FlowError(f"the journal names flow {flow_id}, which no blob holds") from None
            plan = await self._plan(parse_flow(document, source=f"flow {flow_id[:12]}"))
        return plan

    # Runs -------------------------------------------------------------------------------------

    async def submit(
        self,
        flow: Flow,
        input: JSON,
        variables: Mapping[str, JSON] | None = None,
        *,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        parent_step_id: str | None = None,
        batch_id: str | None = None,
        batch_index: int | None = None,
        check_existing: bool = True,
        forked_from_step: str | None = None,
        reused: JSONObject | None = None,
    ) -> str:
        """Start a run and return its id once the run is durably accepted.

        With an explicit ``run_id`` that the journal already holds, nothing new starts: the
        existing run is resumed if it is unfinished (so resubmitting is idempotent).
        ``check_existing=False`` skips that look-up for ids known to be new. A fork of run
        ``parent_run_id`` names the step it runs from (``forked_from_step``) and the
        recorded outputs it takes instead of running those steps (``reused``, see
        :func:`stepflow_stream.core.fork.plan_fork`).
        Raises :class:`InputError` for variables the flow cannot resolve.
        """
        plan = await self._plan(flow)
        resolved = resolve_variables(flow, variables or {}, self.options.env)
        if run_id is None:
            run_id = uuid.uuid4().hex
        elif run_id in self._active or (check_existing and await self._adopt(run_id)):
            return run_id
        state = RunState(run_id)
        state.secrets = {k: resolved.values[k] for k in resolved.secrets if k in resolved.values}
        run = self._active[run_id] = _ActiveRun(state, plan)
        command = SubmitRun(
            run_id=run_id,
            flow_id=flow.flow_id,
            input=input,
            variables=resolved.redacted(),
            parent_run_id=parent_run_id,
            parent_step_id=parent_step_id,
            batch_id=batch_id,
            batch_index=batch_index,
            forked_from_step=forked_from_step,
            reused=reused or {},
        )
        durable = self._process(run, command)
        if durable is not None:
            await durable
        return run_id

    async def wait(self, run_id: str) -> FlowResult:
        """The run's FlowResult, once its terminal event is durable."""
        run = self._active.get(run_id) or self._finished.get(run_id)
        if run is None:
            summary = await self.journal.get_run(run_id)
            if summary is not None and summary.result is not None:
                return summary.result
            if not await self._adopt(run_id):
                raise RunNotFoundError(f"no run with id '{run_id}'")
            run = self._active.get(run_id)
            if run is None:
                return await self.wait(run_id)
        return await asyncio.shield(run.done)

    async def run(
        self, flow: Flow, input: JSON, variables: Mapping[str, JSON] | None = None
    ) -> tuple[str, FlowResult]:
        """Submit a run and wait for its result."""
        run_id = await self.submit(flow, input, variables)
        return run_id, await self.wait(run_id)

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> None:
        """Ask a running run to stop; its tasks' results are then ignored."""
        run = self._active.get(run_id)
        if run is not None:
            durable = self._process(run, CancelRun(run_id, reason))
            if durable is not None:
                await durable

    async def resume_unfinished(self) -> list[str]:
        """Resume every run the journal holds unfinished; returns their ids."""
        resumed = []
        for run_id in await self.journal.unfinished_runs():
            if run_id not in self._active and await self._adopt(run_id):
                resumed.append(run_id)
        return resumed

    async def _adopt(self, run_id: str) -> bool:
        """Load a run from the journal into memory and carry on; False if it is unknown."""
        events = await self.journal.read(run_id)
        if not events:
            return False
        if run_id in self._active:
            return True
        state = fold(run_id, events)
        if state.terminal:
            return True
        plan = await self._plan_by_id(state.flow_id or "")
        if run_id in self._active:
            return True
        secrets = resolve_variables(plan.flow, {}, self.options.env) if plan.flow.variables_schema \
            else None
        if secrets is not None:
            state.secrets = {k: secrets.values[k] for k in secrets.secrets if k in secrets.values}
        run = self._active[run_id] = _ActiveRun(state, plan)
        for task_id, step_id in list(state.running_tasks.items()):
            step = state.steps[step_id]
            self._dispatch(run, StepStarted(
                run_id, -1, 0, step_id=step_id, task_id=task_id, attempt=step.attempt,
                component=step.component or "", plugin=step.plugin or "", input=step.input,
                affinity=step.affinity,
            ))
        events = decide(plan, state, _now_ms())
        if events:
            self._after(run, events)
        return True

    # The loop ---------------------------------------------------------------------------------

    def _process(self, run: _ActiveRun, command: Command) -> Awaitable[None] | None:
        events = handle(run.plan, run.state, command, _now_ms())
        return self._after(run, events) if events else None

    def _after(self, run: _ActiveRun, events: list[Any]) -> Awaitable[None]:
        durable = self.journal.write(events)
        for event in events:
            if type(event) is StepStarted:
                self._dispatch(run, event)
        state = run.state
        if state.terminal:
            self._active.pop(state.run_id, None)
            self._finished[state.run_id] = run
            if len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
            result = state.result
            assert result is not None

            def finish(written: asyncio.Future[None]) -> None:
                if run.done.done():
                    return
                if written.exception() is not None:
                    run.done.set_exception(written.exception())  # type: ignore[arg-type]
                else:
                    run.done.set_result(result)

            asyncio.ensure_future(durable).add_done_callback(finish)
        return durable

    def _dispatch(self, run: _ActiveRun, event: StepStarted) -> None:
        if run.state.secrets:
            event = dataclasses.replace(
                event, input=task_input(run.plan, run.state, event.step_id)
            )
        task = asyncio.get_running_loop().create_task(self._execute(run, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, run: _ActiveRun, event: StepStarted) -> None:
        context = TaskContext(self, run, event)
        async with self._slots:
            try:
                plugin = self.plugins[event.plugin]
            except KeyError:
                result = TaskResult(event.run_id, event.task_id, error=ErrorInfo(
                    ErrorCode.INTERNAL, f"no plugin named '{event.plugin}'"))
            else:
                result = await call_plugin(plugin, event, context)
        if run.state.run_id in self._active:
            self._process(run, result)


def check_flow(flow: Flow, config: Config, plugins: Mapping[str, Plugin]) -> None:
    """Reject, naming the step, a flow whose components no route of ``config`` reaches or
    whose routed plugins all say they do not have (both runtimes check flows this way)."""
    for step in flow.steps:
        where = Location(flow.source, step.line, step=step.id, field="component")
        try:
            config.routes.check(step.component)
        except ConfigError as exc:
            raise ConfigError(exc.reason, where) from None
        known = [
            plugins[name].has_component(component)
            for name, component in config.routes.targets(step.component)
            if name in plugins
        ]
        if known and all(k is False for k in known):
            raise ConfigError(f"unknown component '{step.component}'", where)


async def call_plugin(
    plugin: Plugin, event: StepStarted, context: ExecutionContext
) -> TaskResult:
    """Execute a task; a component's failure, or bug, is the TaskResult's error."""
    try:
        output = await plugin.execute(event.component, event.input, context)
    except ComponentError as exc:
        return TaskResult(event.run_id, event.task_id,
                          error=ErrorInfo(exc.code, exc.message, exc.data),
                          retryable=exc.retryable)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a component's own bug: report it as the step's failure
        message = f"{type(exc).__name__}: {exc}"
        return TaskResult(event.run_id, event.task_id,
                          error=ErrorInfo(ErrorCode.COMPONENT_FAILED, message), retryable=True)
    return TaskResult(event.run_id, event.task_id, output=output)


class TaskContext(BlobTaskContext):
    """The :class:`~stepflow_stream.plugins.base.ExecutionContext` of one task."""

    __slots__ = ("_run", "_runtime", "_sub_runs")

    def __init__(self, runtime: EmbeddedRuntime, run: _ActiveRun, event: StepStarted) -> None:
        super().__init__(event, runtime.blobs)
        self._runtime = runtime
        self._run = run
        self._sub_runs = 0

    @property
    def affinity_key(self) -> str | None:
        # From the state, which holds it for tasks re-dispatched on resume as well.
        step = self._run.state.steps.get(self._event.step_id)
        return self._event.affinity if step is None else step.affinity

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> tuple[FlowResult, str]:
        """Run a sub-flow. Its run id derives from this task's id and the call's order, so a
        retried task finds the sub-runs it started before instead of starting them again."""
        try:
            sub_flow = parse_flow(flow, source=f"sub-flow of step '{self.step_id}'")
        except FlowError as exc:
            raise ComponentError(ErrorCode.INVALID_INPUT, str(exc), retryable=False) from None
        self._sub_runs += 1
        sub_run_id = f"{self.task_id}/{self._sub_runs}"
        runtime = self._runtime
        # Give up this task's slot while it waits, or nested sub-runs could starve it.
        runtime._slots.release()
        try:
            run_id = await runtime.submit(
                sub_flow,
                input,
                {**self._run.state.variables, **self._run.state.secrets},
                run_id=sub_run_id,
                parent_run_id=self.run_id,
                parent_step_id=self.step_id,
            )
            result = await runtime.wait(run_id)
        finally:
            await runtime._slots.acquire()
        return result, run_id
