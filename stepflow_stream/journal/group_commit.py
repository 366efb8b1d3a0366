"""Group commit: events written while a commit is in progress go into the next one together,
so one transaction (and one fsync) serves every writer that arrived meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")

Commit = Callable[[list[Item]], Awaitable[None]]
"""Stores a batch of items (events, or events with their encoding) durably, in one
transaction."""


class GroupCommit(Generic[Item]):
    """Batches ``write`` calls into sequential commits, in call order."""

    def __init__(self, commit: Commit[Item]) -> None:
        self._commit = commit
        self._pending: list[Item] = []
        self._pending_done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    def write(self, items: Sequence[Item]) -> Awaitable[None]:
        """Queue ``items`` for the next commit; the awaitable completes once it is done."""
        loop = asyncio.get_running_loop()
        if self._pending_done is None:
            self._pending_done = loop.create_future()
        self._pending.extend(items)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        # Writers share one commit; shielding keeps one cancelled waiter from cancelling it
        # for all the others.
        return asyncio.shield(self._pending_done)

    async def drain(self) -> None:
        """Wait until everything written so far is committed (or has failed)."""
        while self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        try:
            while self._pending_done is not None:
                items, done = self._pending, self._pending_done
                self._pending, self._pending_done = [], None
                try:
                    await self._commit(items)
                except BaseException as exc:
                    if not done.done():
                        done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flusher = None
