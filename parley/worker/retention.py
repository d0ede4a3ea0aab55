"""The retention sweep (PARLEY_RETENTION_DAYS): conversations idle past the limit are deleted
here and, through the upstream deletion queue, upstream.

It runs where the worker runs (`serve`, `worker`), once at start and then every
`INTERVAL` seconds, in batches of `BATCH` conversations, each batch its own short
transaction (see `store.queries.retention`): between two batches every waiting turn and
webhook gets the store first. Running it twice, or on several workers at once, deletes each
conversation once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.models import utcnow
from parley.store.queries.retention import (
    Deleted,
    expire_batch,
    expire_contacts,
    expire_inbox,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

BATCH = 100
"""Conversations (or contacts, or unreadable webhooks) deleted per transaction."""
INTERVAL = 3600.0
"""Seconds between sweeps: a day's limit needs no finer grain."""


class Retention:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        days: int | None,
        on_upstream: Callable[[], None] = lambda: None,
        batch: int = BATCH,
        interval: float = INTERVAL,
    ) -> None:
        self._sessions = sessions
        self._days = days
        self._on_upstream = on_upstream
        """Called when a sweep queued upstream deletions (wakes the drainer)."""
        self._batch = batch
        self._interval = interval

    async def run(self) -> None:
        """Sweep at start and then every interval, until cancelled; nothing when unset."""
        if self._days is None:
            return
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention.failed")
            await asyncio.sleep(self._interval)

    async def sweep(self, *, now: datetime | None = None) -> Deleted:
        """Delete what has been idle longer than the limit; returns what went."""
        if self._days is None:
            return Deleted()
        cutoff = (now or utcnow()) - timedelta(days=self._days)
        total = Deleted()
        while True:
            batch = await self._in_batch(
                lambda s: expire_batch(s, cutoff=cutoff, limit=self._batch)
            )
            total += batch
            if batch.upstream:
                self._on_upstream()
            if batch.conversations < self._batch:
                break
        total += Deleted(contacts=await self._count(expire_contacts, cutoff))
        total += Deleted(inbox=await self._count(expire_inbox, cutoff))
        if total != Deleted():
            log.info(
                "retention.swept",
                days=self._days,
                conversations=total.conversations,
                messages=total.messages,
                contacts=total.contacts,
                responses=total.responses,
                inbox=total.inbox,
                upstream=total.upstream,
            )
        return total

    async def _count(self, expire: Callable[..., Awaitable[int]], cutoff: datetime) -> int:
        """Run one of the row-count expiries in batches until it runs dry."""
        count = 0
        while True:
            deleted = await self._in_batch(lambda s: expire(s, cutoff=cutoff, limit=self._batch))
            count += deleted
            if deleted < self._batch:
                return count

    async def _in_batch(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self._sessions() as session:
            result = await work(session)
            await session.commit()
        # Let whatever waits for the store (on SQLite, its one connection) go first.
        await asyncio.sleep(0)
        return result
