"""Journal events and the commands that cause them.

Commands ask for change (submit a run, report a task's result, cancel); events record what
happened. Every event carries the run id, its contiguous per-run ``seq`` and a timestamp in
milliseconds that the runtime supplies (the core reads no clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from stepflow_stream.core.jsonvalue import JSON, JSONObject


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as it appears in a FlowResult: ``{code, message, data?}``."""

    code: str
    message: str
    data: JSON = None

    def to_json(self) -> JSONObject:
        result: JSONObject = {"code": self.code, "message": self.message}
        if self.data is not None:
            result["data"] = self.data
        return result

    @classmethod
    def from_json(cls, value: JSONObject) -> ErrorInfo:
        return cls(str(value.get("code")), str(value.get("message", "")), value.get("data"))


@dataclass(frozen=True, slots=True)
class FlowResult:
    """The end of a run: ``{outcome: success, result}`` or ``{outcome: failed, error}``."""

    result: JSON = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> JSONObject:
        if self.error is None:
            return {"outcome": "success", "result": self.result}
        return {"outcome": "failed", "error": self.error.to_json()}

    @classmethod
    def from_json(cls, value: JSONObject) -> FlowResult:
        if value.get("outcome") == "failed":
            return cls(error=ErrorInfo.from_json(value.get("error") or {}))
        return cls(result=value.get("result"))


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all journal events."""

    run_id: str
    seq: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class RunCreated(Event):
    flow_id: str
    input: JSON
    variables: JSONObject
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    forked_from_step: str | None = None
    """Set when the run is a fork of ``parent_run_id``: the step from which it runs again."""


@dataclass(frozen=True, slots=True)
class StepsNeeded(Event):
    step_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StepStarted(Event):
    step_id: str
    task_id: str
    attempt: int
    component: str
    plugin: str
    input: JSON
    affinity: str | None = None
    """The step's affinity key, when it declares one: what the task is keyed by (else the run
    id) and what keeps it on one component-server instance."""


@dataclass(frozen=True, slots=True)
class StepCompleted(Event):
    step_id: str
    task_id: str
    output: JSON
    from_default: bool = False
    """True when the output is the step's ``onError: useDefault`` value, not a component's."""
    reused_from: str | None = None
    """In a fork: the run whose recorded output this is (no component was called)."""


@dataclass(frozen=True, slots=True)
class StepFailed(Event):
    step_id: str
    task_id: str
    attempt: int
    error: ErrorInfo
    retryable: bool


@dataclass(frozen=True, slots=True)
class StepSkipped(Event):
    step_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunCompleted(Event):
    result: JSON


@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class RunCancelRequested(Event):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunCancelled(Event):
    reason: str = ""


EVENT_TYPES: tuple[type[Event], ...] = (
    RunCreated,
    StepsNeeded,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    RunCompleted,
    RunFailed,
    RunCancelRequested,
    RunCancelled,
)

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)


# Commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitRun:
    """Start a run. Submitting the same run id twice starts it once."""

    run_id: str
    flow_id: str
    input: JSON
    variables: JSONObject
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    forked_from_step: str | None = None
    """With ``parent_run_id``: the run is a fork of that run, run again from this step."""
    reused: JSONObject = field(default_factory=dict)
    """In a fork: recorded outputs of the parent's steps, by step id, that the new run takes
    as completed (in this order) instead of calling their components."""


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task's outcome: ``output`` on success, else ``error``. Applied once per task id."""

    run_id: str
    task_id: str
    output: JSON = None
    error: ErrorInfo | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class CancelRun:
    run_id: str
    reason: str = "cancelled by request"


Command: TypeAlias = SubmitRun | TaskResult | CancelRun
