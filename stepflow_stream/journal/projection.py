"""The run index as a projection of events: every adapter derives its rows the same way."""

from __future__ import annotations

import dataclasses

from stepflow_stream.core.events import (
    ErrorInfo,
    Event,
    FlowResult,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
)
from stepflow_stream.core.state import RunStatus
from stepflow_stream.journal.base import RunSummary


def next_summary(current: RunSummary | None, event: Event) -> RunSummary | None:
    """The index row after ``event``, or None when the event does not change it."""
    kind = type(event)
    if kind is RunCreated:
        assert isinstance(event, RunCreated)
        if current is not None:
            return None
        return RunSummary(
            run_id=event.run_id,
            flow_id=event.flow_id,
            status=RunStatus.RUNNING,
            created_at=event.timestamp,
            parent_run_id=event.parent_run_id,
            batch_id=event.batch_id,
            batch_index=event.batch_index,
        )
    if current is None:
        return None
    if kind is RunCompleted:
        assert isinstance(event, RunCompleted)
        result = FlowResult(result=event.result)
        status = RunStatus.COMPLETED
    elif kind is RunFailed:
        assert isinstance(event, RunFailed)
        result = FlowResult(error=event.error)
        status = RunStatus.FAILED
    elif kind is RunCancelled:
        assert isinstance(event, RunCancelled)
        result = FlowResult(error=ErrorInfo("CANCELLED", event.reason or "run cancelled"))
        status = RunStatus.CANCELLED
    else:
        return None
    return dataclasses.replace(
        current, status=status, finished_at=event.timestamp, result=result
    )
