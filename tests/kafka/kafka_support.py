"""Journals for the Kafka tests."""

from __future__ import annotations

from stepflow_stream.core.events import (
    Event,
    RunCompleted,
    RunCreated,
    StepCompleted,
    StepsNeeded,
    StepStarted,
)


def run_journal(run_id: str, steps: int, start_ms: int = 1_700_000_000_000) -> list[Event]:
    """A completed run of ``steps`` steps in a row, each reading the previous output."""
    step_ids = tuple(f"s{i}" for i in range(steps))
    events: list[Event] = [
        RunCreated(run_id, 0, start_ms, "flow-1", {"n": steps, "x": 1.5}, {"v": "é"}),
        StepsNeeded(run_id, 1, start_ms + 1, step_ids),
    ]
    for i, step_id in enumerate(step_ids):
        task_id = f"{run_id}/{step_id}/1"
        events.append(StepStarted(run_id, len(events), start_ms + 2 + i, step_id, task_id, 1,
                                  "/builtin/noop", "builtin", {"i": i}))
        events.append(StepCompleted(run_id, len(events), start_ms + 3 + i, step_id, task_id,
                                    {"i": i, "out": [i, None, True]}))
    events.append(RunCompleted(run_id, len(events), start_ms + 10 + steps, {"steps": steps}))
    return events
