"""Replay and idempotence of the journal (architecture invariants 1, 2, 6 and 7).

Random flows run on the embedded runtime over a MemoryJournal; then:
(a) folding the journal gives the runtime's own final state (and a second fold the same), and
    the stored result is the FlowResult the caller got;
(b) applying any event again, at any later point, changes nothing;
(c) seq is contiguous from 0, each task completes or fails at most once and only after it
    started, each step completes at most once.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from flowgen import KINDS_ALL, RUN_ID, check_journal_shape, flows, inputs, run_embedded
from hypothesis import HealthCheck, given, settings

from stepflow_stream.core.events import TERMINAL_EVENTS
from stepflow_stream.core.state import RunState, apply, fold

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(doc=flows(KINDS_ALL), input=inputs)
def test_fold_reproduces_the_run(doc: dict[str, Any], input: Any) -> None:
    run = asyncio.run(run_embedded(doc, input))
    events = run.events
    folded = fold(RUN_ID, events)
    assert folded == fold(RUN_ID, list(events))
    # Invariant 7: the state the runtime built while appending is the fold of what it appended.
    live = run.runtime._finished[RUN_ID].state
    assert folded == live
    assert folded.terminal
    assert folded.result == run.result
    summary = asyncio.run(run.journal.get_run(RUN_ID))
    assert summary is not None and summary.result == run.result
    assert summary.status == folded.status
    # Exactly one terminal event, the last one.
    assert [isinstance(e, TERMINAL_EVENTS) for e in events].count(True) == 1
    assert isinstance(events[-1], TERMINAL_EVENTS)
    check_journal_shape(events)


@SETTINGS
@given(doc=flows(KINDS_ALL), input=inputs)
def test_reapplying_any_event_changes_nothing(doc: dict[str, Any], input: Any) -> None:
    events = asyncio.run(run_embedded(doc, input)).events
    state = RunState(RUN_ID)
    for i, event in enumerate(events):
        apply(state, event)
        for earlier in events[: i + 1]:
            again = copy.deepcopy(state)
            apply(again, earlier)
            assert again == state, f"re-applying seq {earlier.seq} after seq {i} changed state"
    assert state == fold(RUN_ID, events)
