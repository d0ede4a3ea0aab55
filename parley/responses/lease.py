"""Telling a `/v1` response whose process died from one that is still being answered.

The process running a response renews the row's `heartbeat_at` every third of the lease
(PARLEY_RESPONSE_LEASE_SECONDS), all its open responses in one UPDATE. Every process that serves
`/v1` sweeps as often: an open response not renewed for a whole lease is marked `failed`, so a
client polling `GET /v1/responses/{id}` learns that it ended within about a lease of the
crash, instead of seeing `in_progress` for ever.

A live process renews its responses two more times before the lease runs out, so another one
can sweep them only if the store refused or held its writes for two thirds of a lease; its own
sweep never takes the responses it runs. The cutoff is read from the sweeping process's clock
and compared with the renewing one's: replicas' clocks must agree to well within a lease (NTP
does).

A swept response records nothing more: its messages and usage are written when its turn ends,
so a turn that never ended has none to add, and what was already recorded stays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.models import utcnow
from parley.store.queries.responses import fail_orphans, renew_heartbeats

log = structlog.get_logger(__name__)

SWEEP_BATCH = 100
ORPHANED_ERROR = {
    "code": "server_error",
    "message": "The server running this response stopped before it finished. Please try again.",
}


class ResponseLease:
    """This process's heartbeat for its open responses, and its sweep for other processes'.

    Args:
        running: the ids of the responses this process is answering now.
        lease: seconds without a heartbeat after which a response counts as orphaned.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        running: Callable[[], Collection[str]],
        lease: float,
    ) -> None:
        self._sessions = sessions
        self._running = running
        self._lease = timedelta(seconds=lease)
        self._interval = lease / 3
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._every_interval("heartbeat", self.beat), name="response-heartbeat"
            ),
            asyncio.create_task(self._every_interval("sweep", self.sweep), name="response-sweeper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def beat(self) -> None:
        ids = list(self._running())
        if not ids:
            return
        async with self._sessions() as session:
            await renew_heartbeats(session, response_ids=ids, now=utcnow())
            await session.commit()

    async def sweep(self) -> list[str]:
        """Fail the orphaned responses, a batch per transaction. Returns their ids."""
        # Taken before waiting for a connection: a late sweep only judges more leniently.
        cutoff = utcnow() - self._lease
        swept: list[str] = []
        while True:
            async with self._sessions() as session:
                batch = await fail_orphans(
                    session,
                    cutoff=cutoff,
                    error=ORPHANED_ERROR,
                    running=set(self._running()),
                    limit=SWEEP_BATCH,
                )
                await session.commit()
            for response_id in batch:
                log.warning("responses.orphan_failed", response_id=response_id)
            swept += batch
            if len(batch) < SWEEP_BATCH:
                return swept

    async def _every_interval(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await step()
            except Exception:  # the store is down for a moment: try again next time
                log.warning("responses.lease_step_failed", step=name, exc_info=True)
