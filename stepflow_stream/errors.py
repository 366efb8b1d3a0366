"""The exception tree of stepflow-stream.

    StepflowError                    every error this package raises on purpose
    ├── UserInputError               bad input from a user: exit code 2, never a traceback
    │   ├── FlowError                a flow file that cannot be loaded or is inconsistent
    │   ├── ConfigError              a config file that cannot be loaded or routes nowhere
    │   ├── InputError               a run input or variable that the flow rejects
    │   └── RunNotFoundError         a run id that no journal knows
    ├── ComponentError               a component call that failed (carries code and retryable)
    ├── JournalError                 a journal that is inconsistent (gap in seq, unknown blob)
    └── ServiceUnavailableError      Kafka or PostgreSQL cannot be reached (retryable)

Every error has a ``retryable`` flag: ``True`` only where trying the same thing again may
succeed without anybody changing anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ComponentError",
    "ConfigError",
    "ErrorCode",
    "FlowError",
    "InputError",
    "JournalError",
    "Location",
    "RunNotFoundError",
    "ServiceUnavailableError",
    "StepflowError",
    "UserInputError",
]


class ErrorCode:
    """The error codes of a failed FlowResult (strings, as in Stepflow)."""

    COMPONENT_FAILED = "COMPONENT_FAILED"
    UNREACHABLE = "UNREACHABLE"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    INVALID_INPUT = "INVALID_INPUT"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    EXPRESSION_FAILED = "EXPRESSION_FAILED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem is: a file and line, or a step and field, whatever is known."""

    file: str | None = None
    line: int | None = None
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.step is not None:
            parts.append(f"step '{self.step}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)


class StepflowError(Exception):
    """Base of every error raised on purpose by stepflow-stream."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class UserInputError(StepflowError):
    """Bad input from a user. Its message names where the problem is and what was expected."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.location = location or Location()
        where = str(self.location)
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message


class FlowError(UserInputError):
    """A flow that cannot be loaded: bad YAML, unknown step reference, cycle, bad expression."""


class ConfigError(UserInputError):
    """A config that cannot be loaded, or a component that no route matches."""


class InputError(UserInputError):
    """A run input or variable that the flow's schemas reject, or a required variable missing."""


class RunNotFoundError(UserInputError):
    """A run id that the journal does not hold."""


class ComponentError(StepflowError):
    """A component failed. ``code`` is one of :class:`ErrorCode`; ``retryable`` tells the engine
    whether ``onError: retry`` may try again (component errors are, validation errors are not)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = True,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.data = data


class JournalError(StepflowError):
    """A journal that contradicts itself: a gap in seq, an event for another run, a lost blob."""


class ServiceUnavailableError(StepflowError):
    """A service the distributed runtime needs (a Kafka broker, the PostgreSQL server) cannot be
    reached. The message names the service, its address and the config field it came from."""

    retryable = True
