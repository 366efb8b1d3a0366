"""stepflow-stream: a durable, event-sourced engine for Stepflow flows.

The public API is what ``__all__`` lists; everything else may change between versions.
"""

from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.flow import Flow, parse_flow, parse_flow_text
from stepflow_stream.errors import (
    ComponentError,
    ConfigError,
    ErrorCode,
    FlowError,
    InputError,
    JournalError,
    RunNotFoundError,
    StepflowError,
    UserInputError,
)

__version__ = "0.1.0"

__all__ = [
    "ComponentError",
    "ConfigError",
    "ErrorCode",
    "ErrorInfo",
    "Flow",
    "FlowError",
    "FlowResult",
    "InputError",
    "JournalError",
    "RunNotFoundError",
    "StepflowError",
    "UserInputError",
    "__version__",
    "parse_flow",
    "parse_flow_text",
]
