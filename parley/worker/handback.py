"""The idle hand-back: a conversation a person has had for PARLEY_HANDOFF_IDLE_MINUTES without
an operator's reply goes back to the agent, which then answers what the customer wrote
meanwhile (nobody else did). Each hand-back is a conditional UPDATE, so any number of workers
may run this loop at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.queue.base import Queue
from parley.store.queries.handoff import hand_back_idle

log = structlog.get_logger(__name__)


async def hand_back_idle_once(
    sessions: async_sessionmaker[AsyncSession], queue: Queue, *, idle: timedelta
) -> list[int]:
    """Hand back what has been idle for `idle`; returns the conversations handed back."""
    async with sessions() as session:
        handed = await hand_back_idle(session, idle=idle)
        await session.commit()
    if handed:
        await queue.signal_many(handed)
        log.info("handoff.idle_handed_back", conversations=len(handed))
    return handed


async def run_idle_handback(
    sessions: async_sessionmaker[AsyncSession],
    queue: Queue,
    *,
    idle: timedelta,
    interval: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await hand_back_idle_once(sessions, queue, idle=idle)
        except Exception:
            log.exception("handoff.idle_handback_failed")
