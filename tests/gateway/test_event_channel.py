"""The run stream's live side without Kafka: the feed's per-run channel hands each batch to
every stream as one shared chunk, the stream joins it to what the projection (here a memory
journal) had without a gap or a duplicate, and a stream that fell behind the channel's backlog
reads what it missed from the projection."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest

from gateway import events as sse
from stepflow_stream.core.events import Event, RunCompleted, RunCreated, StepCompleted
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.journal.memory import MemoryJournal

RUN = "run-1"
_ID = re.compile(rb"^id: ?(\d+)\r?$", re.MULTILINE)


def _events(first: int, last: int, *, ends: bool = False) -> list[Event]:
    made: list[Event] = []
    for seq in range(first, last + 1):
        if seq == 0:
            made.append(RunCreated(RUN, 0, 1, flow_id="f", input={}, variables={}))
        elif ends and seq == last:
            made.append(RunCompleted(RUN, seq, 1, result={"done": True}))
        else:
            made.append(StepCompleted(RUN, seq, 1, step_id=f"s{seq}", task_id="t", output=seq))
    return made


def _feed() -> sse.JournalFeed:
    # Never started: the tests hand batches to the channels themselves.
    return sse.JournalFeed(DistributedOptions(bootstrap_servers="", database_url=""))


def _publish(feed: sse.JournalFeed, events: list[Event]) -> None:
    feed._channels[RUN].publish(sse._Batch.of(events))


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), 5)


def _ids(chunk: bytes) -> list[int]:
    return [int(found) for found in _ID.findall(chunk)]


async def test_streams_that_are_up_to_date_send_the_same_chunk_and_end_with_the_run() -> None:
    journal, feed = MemoryJournal(), _feed()
    await journal.write(_events(0, 2))
    followers = [feed.follow(RUN) for _ in range(3)]
    streams = [sse._stream(journal, RUN, -1, follower) for follower in followers]
    # The projection has 0..2; the first live batch overlaps it (2 came in the same fetch).
    assert [_ids(await _next(stream)) for stream in streams] == [[0, 1, 2]] * 3
    _publish(feed, _events(2, 4))
    first = [await _next(stream) for stream in streams]
    assert [_ids(chunk) for chunk in first] == [[3, 4]] * 3
    _publish(feed, _events(5, 7, ends=True))
    chunks = [await _next(stream) for stream in streams]
    assert all(chunk is chunks[0] for chunk in chunks)  # one bytes object for every stream
    assert _ids(chunks[0]) == [5, 6, 7] and b"event: RunCompleted" in chunks[0]
    for stream in streams:
        with pytest.raises(StopAsyncIteration):
            await _next(stream)
    for follower in followers:
        follower.close()
        follower.close()  # the response closes it however it ends: twice is harmless
    assert feed.subscriptions == 0 and not feed._channels


async def test_a_gap_between_the_projection_and_the_live_batch_is_read_from_the_projection(
) -> None:
    journal, feed = MemoryJournal(), _feed()
    await journal.write(_events(0, 1))
    follower = feed.follow(RUN)
    stream = sse._stream(journal, RUN, -1, follower)
    assert _ids(await _next(stream)) == [0, 1]
    await journal.write(_events(2, 5))
    _publish(feed, _events(4, 5))
    assert _ids(await _next(stream)) == [2, 3, 4, 5]
    follower.close()


async def test_a_stream_past_the_backlog_reads_what_it_missed_from_the_projection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sse, "_BACKLOG", 4)
    journal, feed = MemoryJournal(), _feed()
    await journal.write(_events(0, 0))
    slow, quick = feed.follow(RUN), feed.follow(RUN)
    slow_stream = sse._stream(journal, RUN, -1, slow)
    quick_stream = sse._stream(journal, RUN, -1, quick)
    assert _ids(await _next(slow_stream)) == [0] and _ids(await _next(quick_stream)) == [0]
    for first in range(1, 12, 2):
        await journal.write(_events(first, first + 1))
        _publish(feed, _events(first, first + 1))
        assert _ids(await _next(quick_stream)) == [first, first + 1]
    channel = feed._channels[RUN]
    assert channel.held <= 4  # the slow stream held back no more than the backlog
    with caplog.at_level(logging.WARNING, logger="stepflow_stream.gateway"):
        assert _ids(await _next(slow_stream)) == list(range(1, 13))
    assert "slow reader" in caplog.text
    slow.close()
    quick.close()


async def test_batches_every_stream_has_sent_are_not_kept() -> None:
    journal, feed = MemoryJournal(), _feed()
    await journal.write(_events(0, 0))
    follower = feed.follow(RUN)
    stream = sse._stream(journal, RUN, -1, follower)
    assert _ids(await _next(stream)) == [0]
    for seq in range(1, 101):
        _publish(feed, _events(seq, seq))
        assert _ids(await _next(stream)) == [seq]
    assert len(feed._channels[RUN].batches) <= sse._TRIM_EVERY + 1
    follower.close()
