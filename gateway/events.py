"""``GET /api/v1/runs/{run_id}/events``: a run's journal as Server-Sent Events.

Each event is one SSE message: ``id`` is the event's seq, ``event`` its type, ``data`` the event
as JSON. A client that reconnects with ``Last-Event-ID`` (or asks ``?since=SEQ``) gets the
events after that seq. Past events come from the PostgreSQL projection; live ones from the
journal topic, read by one Kafka consumer per gateway process (:class:`JournalFeed`). The events
of a run that came in one fetch are encoded once, joined into one chunk, and handed to all the
run's streams at once (:class:`_Channel`): a stream that is up to date sends that same bytes
object, so a thousand streams on one run cost a thousand wake-ups and writes per fetch, not per
event. The stream subscribes to the feed before it reads the projection, and passes over what
it has already sent, so there is neither a gap nor a duplicate at the seam; should the
projection lag behind Kafka, the missing seqs are read from it again until it has them. The
stream ends after the run's terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from gateway.api_errors import storable
from gateway.auth import tenant_of
from stepflow_stream.cli.inspect import event_json
from stepflow_stream.core.events import Event, RunCancelled, RunCompleted, RunFailed
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.journal.base import Journal
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.journal.postgres import PostgresDatabase, PostgresJournal
from stepflow_stream.kafka.records import run_id_of

__all__ = ["TERMINAL_EVENTS", "EventStream", "JournalFeed", "event_routes", "events_app",
           "serving_events",
           "visible_to"]

log = logging.getLogger("stepflow_stream.gateway")

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)
_PING_S = 15.0
_GAP_POLL_S = 0.02
_GAP_WAIT_S = 10.0
_QUEUE_LIMIT = 10_000
_BACKLOG = 10_000
"""Events a run's channel keeps for a stream that has not sent them yet: one that stopped
reading loses the older ones and reads them from the projection when it goes on."""
_TRIM_EVERY = 32
"""Batches a channel collects before it drops those every stream has sent."""
_COLLECT_SHARE = 0.2
_COLLECT_MIN_OPENED = 100
_COLLECT_QUIET_S = 0.2
"""The feed runs Python's full garbage collection itself once it has handed out nothing for
this long (the streams have sent what it last did) and the streams opened since it last did
number a fifth of those open, and at least ``_COLLECT_MIN_OPENED``."""
_APPEAR_WAIT_S = 2.0
_SEQ = re.compile("-?[0-9]{1,20}")
_MAX_SEQ = 2**63 - 1


class JournalFeed:
    """Follows the whole journal topic from its end and hands each committed event to the
    streams of its run (:meth:`follow`) and to the queues subscribed to it (:meth:`subscribe`).
    Records of runs nobody follows are not even decoded."""

    def __init__(self, options: DistributedOptions) -> None:
        self.options = options
        self._channels: dict[str, _Channel] = {}
        self._queues: dict[str, set[asyncio.Queue[Event]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._streams = 0
        self._opened = 0  # streams opened since the last full collection
        self._handed_at = 0.0  # the loop's time when the feed last handed out events
        self.ready = asyncio.Event()

    async def start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.options.bootstrap_servers,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        partitions = [TopicPartition(self.options.topics.journal, p)
                      for p in range(self.options.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # fix the starting positions before anyone subscribes
            await consumer.position(tp)
        self.ready.set()
        self._task = asyncio.get_running_loop().create_task(self._follow(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def follow(self, run_id: str) -> _Follower:
        """The run's events committed from now on, in batches, until ``close()``."""
        channel = self._channels.get(run_id)
        if channel is None:
            channel = self._channels[run_id] = _Channel(run_id)
        follower = _Follower(channel, self._release)
        channel.followers.add(follower)
        self._streams += 1
        self._opened += 1
        return follower

    def _release(self, follower: _Follower) -> None:
        channel = follower.channel
        if follower in channel.followers:
            channel.followers.remove(follower)
            self._streams -= 1
        if not channel.followers and self._channels.get(channel.run_id) is channel:
            del self._channels[channel.run_id]

    @contextlib.contextmanager
    def subscribe(self, *run_ids: str) -> Iterator[asyncio.Queue[Event]]:
        """One queue of the runs' events committed from now on, while the block runs: for a
        stream that follows many runs (a batch) and wants few of their events."""
        queue: asyncio.Queue[Event] = asyncio.Queue(_QUEUE_LIMIT)
        for run_id in run_ids:
            self._queues.setdefault(run_id, set()).add(queue)
        try:
            yield queue
        finally:
            for run_id in run_ids:
                queues = self._queues.get(run_id)
                if queues is not None:
                    queues.discard(queue)
                    if not queues:
                        del self._queues[run_id]

    @property
    def subscriptions(self) -> int:
        return (sum(len(channel.followers) for channel in self._channels.values())
                + sum(len(queues) for queues in self._queues.values()))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=250)
            runs: dict[str, list[Event]] = {}
            channels, queues = self._channels, self._queues
            for records in fetched.values():
                for record in records:
                    if record.key is None or record.value is None:
                        continue
                    run_id = run_id_of(record.key)
                    if run_id in channels or run_id in queues:
                        runs.setdefault(run_id, []).append(decode_event(record.value))
            for run_id, events in runs.items():
                channel = channels.get(run_id)
                if channel is not None:
                    channel.publish(_Batch.of(events))
                for queue in list(queues.get(run_id, ())):
                    for event in events:
                        try:
                            queue.put_nowait(event)
                        except asyncio.QueueFull:
                            # A reader that stopped reading: it reads the run index again.
                            log.warning("dropped an event for a slow reader of run %s", run_id)
            now = asyncio.get_running_loop().time()
            if runs:
                self._handed_at = now
            elif now - self._handed_at >= _COLLECT_QUIET_S:
                self._collect_if_due()

    def _collect_if_due(self) -> None:
        """Python's full collection scans every object, and a thousand streams hold a quarter
        of a million (their tasks, cancel scopes, coroutines): it stops the process for 50 to
        150 ms. The interpreter runs it once the objects that outlived two younger
        collections have grown by a quarter since the last one, which new streams do: after
        many opened at once it came due at the first event they were sent, and that event
        reached them all that much later. Run here, while there is nothing to send, it comes
        before the interpreter's and delays no event."""
        if self._opened >= max(_COLLECT_MIN_OPENED, _COLLECT_SHARE * self._streams):
            gc.collect()
            self._opened = 0


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events of one run that came in one fetch, each encoded once for all streams."""

    seqs: tuple[int, ...]
    messages: tuple[bytes, ...]
    chunk: bytes
    """The messages joined: what a stream that has sent everything before them sends."""
    contiguous: bool
    ends: bool
    """Whether the last event is the run's end (nothing after it is kept)."""

    @classmethod
    def of(cls, events: list[Event]) -> _Batch:
        for index, event in enumerate(events):
            if isinstance(event, TERMINAL_EVENTS):
                events = events[:index + 1]
                break
        seqs = tuple(event.seq for event in events)
        messages = tuple(_message(event) for event in events)
        return cls(seqs, messages, b"".join(messages),
                   seqs[-1] - seqs[0] == len(seqs) - 1 and seqs == tuple(sorted(seqs)),
                   isinstance(events[-1], TERMINAL_EVENTS))


class _Channel:
    """One run's live events, shared by every stream that follows the run: the batches they
    have not all sent yet, and one :class:`asyncio.Event` that wakes them all per batch."""

    __slots__ = ("batches", "changed", "dropped", "followers", "held", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.batches: list[_Batch] = []
        self.dropped = 0  # batches no longer kept: the index of ``batches[0]``
        self.held = 0  # events in ``batches``
        self.changed = asyncio.Event()
        self.followers: set[_Follower] = set()

    @property
    def end(self) -> int:
        return self.dropped + len(self.batches)

    def publish(self, batch: _Batch) -> None:
        self.batches.append(batch)
        self.held += len(batch.seqs)
        if len(self.batches) > _TRIM_EVERY or self.held > _BACKLOG:
            self._trim()
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _trim(self) -> None:
        """Drops the batches every follower has taken, and the oldest ones beyond the backlog
        (a follower that had not taken them reads them from the projection)."""
        keep = min((follower.next for follower in self.followers), default=self.end)
        drop = max(keep - self.dropped, 0)  # a follower may be behind what was dropped
        held = self.held - sum(len(batch.seqs) for batch in self.batches[:drop])
        while held > _BACKLOG and drop < len(self.batches) - 1:
            held -= len(self.batches[drop].seqs)
            drop += 1
        del self.batches[:drop]
        self.dropped += drop
        self.held = held


class _Follower:
    """One stream's place in its run's channel."""

    __slots__ = ("_release", "channel", "next")

    def __init__(self, channel: _Channel, release: Callable[[_Follower], None]) -> None:
        self.channel = channel
        self.next = channel.end  # the index of the next batch to take
        self._release = release

    @property
    def pending(self) -> bool:
        return self.next < self.channel.end

    def take(self) -> list[_Batch]:
        """The batches committed since the last call (maybe none)."""
        channel = self.channel
        if self.next < channel.dropped:
            log.warning("a slow reader of run %s missed %d batches; it reads them from the "
                        "projection", channel.run_id, channel.dropped - self.next)
            self.next = channel.dropped
        batches = channel.batches[self.next - channel.dropped:]
        self.next = channel.end
        return batches

    async def wait(self) -> None:
        """Until the channel has a batch this follower has not taken."""
        if not self.pending:
            await self.channel.changed.wait()

    def close(self) -> None:
        self._release(self)


class EventStream(EventSourceResponse):
    """sse-starlette's response, minus the cancel scope it opens around every send when no
    send timeout is set: with a thousand streams on one event, that scope was a fifth of the
    gateway's CPU. A stalled client holds no more than its run channel's backlog in memory.
    ``on_close`` runs when the response ends, however it ends (even if the stream never
    started: its generator's ``finally`` would not run then)."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], object],
                 ping: float, headers: dict[str, str]) -> None:
        super().__init__(content, ping=ping, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def _since(request: Request) -> int | Response:
    """The last seq the client has: ``Last-Event-ID``, else ``?since=``; -1 for none. Both
    are checked when both are sent; a seq is a 64-bit integer, as the journal's column."""
    found = -1
    for field, raw in (("since", request.query_params.get("since")),
                       ("Last-Event-ID", request.headers.get("last-event-id") or None)):
        if raw is None:
            continue
        if not _SEQ.fullmatch(raw) or int(raw) > _MAX_SEQ:
            return _error(400, "INVALID_ARGUMENT", f"'{field}' is the seq of the last event "
                          f"received, an integer up to {_MAX_SEQ}; got {raw[:40]!r}")
        found = max(int(raw), -1)
    return found


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _message(event: Event) -> bytes:
    """The event as one encoded SSE message: encoded once, however many streams send it."""
    return ServerSentEvent(
        data=json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":")),
        event=type(event).__name__, id=str(event.seq),
    ).encode()


async def _read_gap(journal: Journal, run_id: str, last: int, before: int) -> list[Event]:
    """The run's events after ``last`` and before ``before`` from the projection, waiting for
    it to catch up with Kafka."""
    waited = 0.0
    while True:
        events = [e for e in await journal.read(run_id, last) if e.seq < before]
        if len(events) == before - last - 1 or waited >= _GAP_WAIT_S:
            return events
        await asyncio.sleep(_GAP_POLL_S)
        waited += _GAP_POLL_S


async def _stream(journal: Journal, run_id: str, last: int,
                  follower: _Follower) -> AsyncIterator[bytes]:
    chunk: list[bytes] = []
    for event in await journal.read(run_id, last):
        chunk.append(_message(event))
        last = event.seq
        if isinstance(event, TERMINAL_EVENTS):
            yield b"".join(chunk)
            return
    if chunk:
        yield b"".join(chunk)
    while True:
        batches = follower.take()
        if not batches:
            await follower.wait()
            continue
        batch = batches[0]
        if len(batches) == 1 and batch.contiguous and batch.seqs[0] == last + 1:
            # The usual case: the stream has sent everything before this batch, and sends
            # the bytes every other stream of the run sends.
            yield batch.chunk
            if batch.ends:
                return
            last = batch.seqs[-1]
            continue
        chunk = []
        for batch in batches:
            for seq, message in zip(batch.seqs, batch.messages, strict=True):
                if seq <= last:
                    continue  # already sent from the projection
                if seq > last + 1:
                    for missing in await _read_gap(journal, run_id, last, seq):
                        chunk.append(_message(missing))
                        last = missing.seq
                chunk.append(message)
                last = seq
            if batch.ends and last == batch.seqs[-1]:
                yield b"".join(chunk)
                return
        if chunk:
            yield b"".join(chunk)


async def _known(journal: Journal, run_id: str, follower: _Follower) -> bool:
    """Whether the run exists; a run submitted a moment ago is given a little while to appear
    (its first event is committed and projected within milliseconds)."""
    waited = 0.0
    while True:
        if follower.pending or await journal.get_run(run_id) is not None:
            return True
        if waited >= _APPEAR_WAIT_S:
            return False
        await asyncio.sleep(_GAP_POLL_S * 5)
        waited += _GAP_POLL_S * 5


async def visible_to(request: Request, run_id: str) -> bool:
    """Whether the request's token may see the run: always, unless the token carries a
    tenant (in a full gateway app) and the run is not that tenant's. Another tenant's run is
    "not found", as in the rest of the API."""
    tenant = tenant_of(request)
    state = getattr(request.app.state, "gateway", None)
    if tenant is None or state is None:
        return True
    owner: str | None = await state.owner(run_id)
    return owner == tenant


@contextlib.asynccontextmanager
async def serving_events(
    state: Any, options: DistributedOptions, database: PostgresDatabase
) -> AsyncIterator[None]:
    """For the app's lifespan: start the journal feed the event routes read (kept in
    ``state``, the app's ``state``) and stop it afterwards."""
    feed = JournalFeed(options)
    await feed.start()
    state.journal_feed = feed
    state.event_journal = PostgresJournal(database)
    state.event_database = database
    try:
        yield
    finally:
        await feed.stop()


async def _all_sent(journal: PostgresJournal, run_id: str, since: int) -> bool:
    """Whether the run has ended and a client that has every event up to ``since`` has its
    terminal event."""
    summary = await journal.get_run(run_id)
    if summary is None or not summary.status.terminal:
        return False
    return not await journal.read(run_id, since)


def event_routes(*, ping_s: float = _PING_S) -> list[Route]:
    """The SSE routes, to mount in a gateway app whose lifespan runs :func:`serving_events`."""

    async def run_events(request: Request) -> Response:
        feed: JournalFeed = request.app.state.journal_feed
        journal: PostgresJournal = request.app.state.event_journal
        run_id = request.path_params["run_id"]
        since = _since(request)
        if isinstance(since, Response):
            return since
        if not storable(run_id) or not await visible_to(request, run_id):
            return _error(404, "NOT_FOUND", f"no run with id '{run_id}'")
        await feed.ready.wait()
        follower = feed.follow(run_id)
        if not await _known(journal, run_id, follower):
            follower.close()
            return _error(404, "NOT_FOUND", f"no run with id '{run_id}'")
        if since >= 0 and await _all_sent(journal, run_id, since):
            # A browser reconnects by itself after a stream ends; 204 is what makes it stop.
            follower.close()
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return EventStream(_stream(journal, run_id, since, follower), on_close=follower.close,
                           ping=int(ping_s) or 1, headers={"Cache-Control": "no-store"})

    return [Route("/api/v1/runs/{run_id}/events", run_events, methods=["GET"])]


def events_app(options: DistributedOptions, *, ping_s: float = _PING_S,
               extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """An app of the event routes alone (and ``extra_routes``), with its own database pool:
    what the SSE benchmark and the stream tests serve, without the rest of the gateway."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = await PostgresDatabase.connect(options.database_url)
        try:
            async with serving_events(app.state, options, database):
                yield
        finally:
            await database.close()

    return Starlette(routes=[*event_routes(ping_s=ping_s), *extra_routes], lifespan=lifespan)
