"""A run interrupted at any event and resumed gives the uninterrupted answer (invariants 3, 4).

Run a flow to completion (journal A). For a cut point k in [1, len(A) - 1], seed a fresh
MemoryJournal with A[:k] and a fresh MemoryBlobStore with the flow, start a new runtime,
``resume_unfinished()`` and ``wait``: the result is the uninterrupted one, the first k events
are kept as they were, and no step completes twice. Components include ``/flaky`` ones (fail
their first attempts, retryable) with ``onError: retry``, so cuts fall between retries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from flowgen import (
    CONFIG,
    KINDS_NO_FAIL,
    RUN_ID,
    PropPlugin,
    check_against_reference,
    check_journal_shape,
    flows,
    inputs,
    reference,
    run_embedded,
    same_result,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stepflow_stream.core.events import Event, FlowResult, StepFailed
from stepflow_stream.core.state import fold
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedRuntime

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Resumed:
    result: FlowResult
    events: list[Event]
    resumed: list[str]


async def resume_from(doc: dict[str, Any], prefix: list[Event]) -> Resumed:
    journal, blobs = MemoryJournal(), MemoryBlobStore()
    await journal.append(prefix)
    await blobs.put(doc, "flow")
    runtime = EmbeddedRuntime(CONFIG, journal, blobs, plugins={"test": PropPlugin()})
    async with runtime:
        resumed = await runtime.resume_unfinished()
        result = await runtime.wait(RUN_ID)
        events = await journal.read(RUN_ID)
    return Resumed(result, events, resumed)


def check_resumed(doc: dict[str, Any], input: Any, full: list[Event], result: FlowResult,
                  k: int) -> None:
    resumed = asyncio.run(resume_from(doc, full[:k]))
    assert resumed.resumed == [RUN_ID]
    assert resumed.events[:k] == full[:k]
    check_journal_shape(resumed.events)
    assert fold(RUN_ID, resumed.events).result == resumed.result
    ref = reference(doc, input)
    check_against_reference(ref, resumed.result, resumed.events)
    if ref.exact:
        assert same_result(resumed.result, result), (resumed.result, result)


@SETTINGS
@given(doc=flows(KINDS_NO_FAIL), input=inputs, data=st.data())
def test_resume_after_any_cut_gives_the_same_answer(
    doc: dict[str, Any], input: Any, data: st.DataObject
) -> None:
    run = asyncio.run(run_embedded(doc, input))
    assume(len(run.events) >= 2)
    k = data.draw(st.integers(1, len(run.events) - 1), label="cut")
    check_resumed(doc, input, run.events, run.result, k)


@settings(SETTINGS, max_examples=80)
@given(doc=flows(("flaky",), min_steps=2, max_steps=6), input=inputs, data=st.data())
def test_resume_between_retries(doc: dict[str, Any], input: Any, data: st.DataObject) -> None:
    """Only flaky steps, and the cut lands just after a failed attempt when there is one."""
    run = asyncio.run(run_embedded(doc, input))
    failures = [i + 1 for i, e in enumerate(run.events) if isinstance(e, StepFailed)]
    cuts = [k for k in failures if k < len(run.events)] or list(range(1, len(run.events)))
    assume(cuts)
    k = data.draw(st.sampled_from(cuts), label="cut")
    check_resumed(doc, input, run.events, run.result, k)
