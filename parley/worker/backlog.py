"""The backlog gauges, kept fresh by one cheap query every PARLEY_METRICS_INTERVAL seconds.

A scrape only reads the gauges: Prometheus never waits on the store, and a store that is down
leaves the last figures (and `parley_backlog_sampled_timestamp_seconds` says how old they are).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.observability.metrics import (
    BACKLOG_SAMPLED,
    INBOX_BACKLOG,
    INBOX_OLDEST_SECONDS,
    QUEUE_DEPTH,
    QUEUE_OLDEST_SECONDS,
)
from parley.store.queries.backlog import read_backlog

log = structlog.get_logger(__name__)


async def sample_backlog(sessions: async_sessionmaker[AsyncSession], *, timeout: float) -> None:
    """Read the backlog once and set the gauges."""
    async with asyncio.timeout(timeout), sessions() as session:
        backlog = await read_backlog(session)
    QUEUE_DEPTH.set(backlog.waiting)
    QUEUE_OLDEST_SECONDS.set(backlog.oldest_waiting_s)
    INBOX_BACKLOG.set(backlog.inbox)
    INBOX_OLDEST_SECONDS.set(backlog.oldest_inbox_s)
    BACKLOG_SAMPLED.set(time.time())


async def run_backlog_sampler(
    sessions: async_sessionmaker[AsyncSession], *, interval: float
) -> None:
    while True:
        try:
            await sample_backlog(sessions, timeout=max(interval, 1.0))
        except Exception as exc:  # the store is down or slow: keep the last figures
            log.warning("metrics.backlog_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)
