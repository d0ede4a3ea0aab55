"""The reconciler repairs lost signals: conversations whose messages wait too long are signalled
again. Signals are cheap to repeat, since a worker that finds nothing to do simply moves on."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.queue.base import Queue
from parley.store.queries.turns import conversations_waiting

log = structlog.get_logger(__name__)


async def resignal(
    sessions: async_sessionmaker[AsyncSession], queue: Queue, *, older_than: timedelta | None
) -> int:
    """Signal every conversation with messages waiting longer than `older_than` (None: all)."""
    async with sessions() as session:
        waiting = await conversations_waiting(session, older_than=older_than)
    if waiting:
        await queue.signal_many(waiting)
        log.info("reconcile.resignalled", conversations=len(waiting))
    return len(waiting)


async def run_reconciler(
    sessions: async_sessionmaker[AsyncSession],
    queue: Queue,
    *,
    interval: float,
    older_than: timedelta,
) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await resignal(sessions, queue, older_than=older_than)
        except Exception:
            log.exception("reconcile.failed")
