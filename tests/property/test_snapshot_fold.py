"""A snapshot stands in for the events it folded (what an orchestrator relies on).

Random flows run on the embedded runtime; for every cut k of the journal, the state folded
from the first k events is encoded and decoded (``journal/snapshots.py``), then:
(a) it equals the folded state, and folding the remaining events into it gives the fold of the
    whole journal;
(b) the scheduler decides the same events from it as from the folded state: its memo, which
    snapshots leave out, is rebuilt.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from flowgen import CONFIG, KINDS_ALL, RUN_ID, flows, inputs, run_embedded
from hypothesis import HealthCheck, given, settings

from stepflow_stream.core.flow import parse_flow
from stepflow_stream.core.scheduler import RunPlan, decide
from stepflow_stream.core.state import apply, fold
from stepflow_stream.journal.snapshots import decode_state, encode_state

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(doc=flows(KINDS_ALL), input=inputs)
def test_a_restored_snapshot_folds_and_decides_like_the_journal(
    doc: dict[str, Any], input: Any
) -> None:
    events = asyncio.run(run_embedded(doc, input)).events
    whole = fold(RUN_ID, events)
    plan = RunPlan(parse_flow(doc), CONFIG.routes)
    for k in range(1, len(events) + 1):
        folded = fold(RUN_ID, events[:k])
        restored = decode_state(encode_state(folded))
        assert restored == folded, f"cut {k}"
        assert not restored.scheduled
        assert decide(plan, copy.deepcopy(restored), 0) == decide(plan, folded, 0), f"cut {k}"
        for event in events[k:]:
            apply(restored, event)
        assert restored == whole, f"cut {k}"
