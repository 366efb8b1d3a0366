"""``GET /api/v1/runs/{run_id}/events``: a run's journal as Server-Sent Events.

Each event is one SSE message: ``id`` is the event's seq, ``event`` its type, ``data`` the event
as JSON. A client that reconnects with ``Last-Event-ID`` (or asks ``?since=SEQ``) gets the
events after that seq. Past events come from the PostgreSQL projection; live ones from the
journal topic, read by one Kafka consumer per gateway process (:class:`JournalFeed`) that hands
each committed event to the streams of its run. The stream subscribes to the feed before it
reads the projection, and passes over what it has already sent, so there is neither a gap nor a
duplicate at the seam; should the projection lag behind Kafka, the missing seqs are read from
it again until it has them. The stream ends after the run's terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Send

from gateway.auth import tenant_of
from stepflow_stream.cli.inspect import event_json
from stepflow_stream.core.events import Event, RunCancelled, RunCompleted, RunFailed
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.journal.codec import decode_event
from stepflow_stream.journal.postgres import PostgresDatabase, PostgresJournal
from stepflow_stream.kafka.records import run_id_of

__all__ = ["TERMINAL_EVENTS", "EventStream", "JournalFeed", "event_routes", "serving_events",
           "visible_to"]

log = logging.getLogger("stepflow_stream.gateway")

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)
_PING_S = 15.0
_GAP_POLL_S = 0.02
_GAP_WAIT_S = 10.0
_QUEUE_LIMIT = 10_000
_APPEAR_WAIT_S = 2.0


class JournalFeed:
    """Follows the whole journal topic from its end and fans each committed event out to the
    queues subscribed to its run. Records of runs nobody follows are not even decoded."""

    def __init__(self, options: DistributedOptions) -> None:
        self.options = options
        self._subscribers: dict[str, set[asyncio.Queue[_Delivery]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
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

    @contextlib.contextmanager
    def subscribe(self, *run_ids: str) -> Iterator[asyncio.Queue[_Delivery]]:
        """One queue of the runs' events committed from now on, while the block runs."""
        queue: asyncio.Queue[_Delivery] = asyncio.Queue(_QUEUE_LIMIT)
        for run_id in run_ids:
            self._subscribers.setdefault(run_id, set()).add(queue)
        try:
            yield queue
        finally:
            for run_id in run_ids:
                queues = self._subscribers.get(run_id)
                if queues is not None:
                    queues.discard(queue)
                    if not queues:
                        del self._subscribers[run_id]

    @property
    def subscriptions(self) -> int:
        return sum(len(queues) for queues in self._subscribers.values())

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if record.key is None or record.value is None:
                        continue
                    queues = self._subscribers.get(run_id_of(record.key))
                    if not queues:
                        continue
                    event = decode_event(record.value)
                    delivery = _Delivery(event, _message(event))
                    for queue in list(queues):
                        try:
                            queue.put_nowait(delivery)
                        except asyncio.QueueFull:
                            # A reader that stopped reading: it will find the gap and read it
                            # from the projection, as after any reconnect.
                            log.warning("dropped an event for a slow reader of run %s",
                                        event.run_id)


class EventStream(EventSourceResponse):
    """sse-starlette's response, minus the cancel scope it opens around every send when no
    send timeout is set: with a thousand streams on one event, that scope was a fifth of the
    gateway's CPU. A stalled client is still cut off by the per-stream queue limit."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def _since(request: Request) -> int | Response:
    """The last seq the client has: ``Last-Event-ID``, else ``?since=``; -1 for none."""
    raw = request.headers.get("last-event-id")
    field = "Last-Event-ID"
    if raw is None:
        raw = request.query_params.get("since")
        field = "since"
    if raw is None or raw == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        return _error(400, "INVALID_ARGUMENT",
                      f"'{field}' is the seq of the last event received, an integer; got {raw!r}")
    return max(value, -1)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _message(event: Event) -> bytes:
    """The event as one encoded SSE message: encoded once, however many streams send it."""
    return ServerSentEvent(
        data=json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":")),
        event=type(event).__name__, id=str(event.seq),
    ).encode()


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: Event
    message: bytes


async def _read_gap(journal: PostgresJournal, run_id: str, last: int, before: int) -> list[Event]:
    """The run's events after ``last`` and before ``before`` from the projection, waiting for
    it to catch up with Kafka."""
    waited = 0.0
    while True:
        events = [e for e in await journal.read(run_id, last) if e.seq < before]
        if len(events) == before - last - 1 or waited >= _GAP_WAIT_S:
            return events
        await asyncio.sleep(_GAP_POLL_S)
        waited += _GAP_POLL_S


async def _stream(journal: PostgresJournal, run_id: str, last: int,
                  queue: asyncio.Queue[_Delivery]) -> AsyncIterator[bytes]:
    for event in await journal.read(run_id, last):
        yield _message(event)
        last = event.seq
        if isinstance(event, TERMINAL_EVENTS):
            return
    while True:
        # Events come in bursts (those of one journal transaction): what is already queued
        # goes out in one write, which is most of the cost of a stream.
        deliveries = [await queue.get()]
        while not queue.empty():
            deliveries.append(queue.get_nowait())
        chunk: list[bytes] = []
        ended = False
        for delivery in deliveries:
            event = delivery.event
            if event.seq <= last:
                continue  # already sent from the projection
            if event.seq > last + 1:
                for missing in await _read_gap(journal, run_id, last, event.seq):
                    chunk.append(_message(missing))
                    last = missing.seq
            chunk.append(delivery.message)
            last = event.seq
            if isinstance(event, TERMINAL_EVENTS):
                ended = True
                break
        if chunk:
            yield b"".join(chunk)
        if ended:
            return


async def _known(
    journal: PostgresJournal, run_id: str, queue: asyncio.Queue[_Delivery]
) -> bool:
    """Whether the run exists; a run submitted a moment ago is given a little while to appear
    (its first event is committed and projected within milliseconds)."""
    waited = 0.0
    while True:
        if not queue.empty() or await journal.get_run(run_id) is not None:
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


def event_routes(*, ping_s: float = _PING_S) -> list[Route]:
    """The SSE routes, to mount in a gateway app whose lifespan runs :func:`serving_events`."""

    async def run_events(request: Request) -> Response:
        feed: JournalFeed = request.app.state.journal_feed
        journal: PostgresJournal = request.app.state.event_journal
        run_id = request.path_params["run_id"]
        since = _since(request)
        if isinstance(since, Response):
            return since
        if not await visible_to(request, run_id):
            return _error(404, "NOT_FOUND", f"no run with id '{run_id}'")
        await feed.ready.wait()
        subscription = feed.subscribe(run_id)
        queue = subscription.__enter__()
        if not await _known(journal, run_id, queue):
            subscription.__exit__(None, None, None)
            return _error(404, "NOT_FOUND", f"no run with id '{run_id}'")

        async def events() -> AsyncIterator[bytes]:
            try:
                async for message in _stream(journal, run_id, since, queue):
                    yield message
            finally:
                subscription.__exit__(None, None, None)

        return EventStream(events(), ping=int(ping_s) or 1,
                                   headers={"Cache-Control": "no-store"})

    return [Route("/api/v1/runs/{run_id}/events", run_events, methods=["GET"])]
