"""The plugin port: what the engine needs from anything that executes components."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """What ``components/list`` and ``components/info`` report of one component."""

    component: str
    description: str | None = None
    input_schema: JSONObject | None = None
    output_schema: JSONObject | None = None


class ExecutionContext(Protocol):
    """What a component call can reach besides its input: ids, blobs and sub-flows."""

    @property
    def run_id(self) -> str: ...

    @property
    def step_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def task_id(self) -> str: ...

    @property
    def affinity_key(self) -> str | None:
        """The step's affinity key, or None when it declares none. Calls with one key are sent
        to one component-server instance while that instance lives."""
        ...

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        """Store a value and return its content id."""
        ...

    async def get_blob(self, blob_id: str) -> JSON:
        """The value stored under ``blob_id``; raises ComponentError if there is none."""
        ...

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> tuple[FlowResult, str]:
        """Run ``flow`` as a sub-run of this step (own journal, linked to this run);
        returns its FlowResult and its run id."""
        ...


@dataclass(frozen=True, slots=True)
class PluginOptions:
    """Settings shared by every plugin instance."""

    name: str
    """The plugin's name in the config (``plugins: {name: {...}}``)."""
    settings: JSONObject = field(default_factory=dict)
    """The plugin's own config mapping, ``${VAR}`` already expanded."""


class Plugin(ABC):
    """Executes components. ``execute`` raises :class:`~stepflow_stream.errors.ComponentError`
    on failure, with ``retryable`` telling whether ``onError: retry`` may try again."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, subprocesses) before the first call."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` acquired; in-flight calls have finished."""

    def has_component(self, component: str) -> bool | None:
        """Whether the plugin offers ``component``: None when it cannot tell without I/O.

        Used to reject a flow before its run starts (an unknown builtin, say)."""
        return None

    @abstractmethod
    async def list_components(self) -> list[ComponentInfo]:
        """The components this plugin offers."""

    @abstractmethod
    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        """Run ``component`` (its name within this plugin, e.g. ``/noop``) on ``input``."""
