"""Group commit: many concurrent webhooks appended to the inbox in one transaction.

Each request puts its body and a future on a queue; one task drains whatever is waiting (up to
`max_batch`), inserts it with one statement, commits, and resolves the futures. A commit is
the expensive part of accepting a webhook (a sync to disk, a round trip to PostgreSQL), so
under load one commit acknowledges many webhooks, and at low load a webhook waits for no one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.observability.metrics import INBOX_COMMITS
from parley.store.db import ends_with_next_statement, priority_commit
from parley.store.queries.inbox import Arrival, append

log = structlog.get_logger(__name__)


_CHAIN = 4
"""Most commits in a row the writer makes while webhooks keep arriving, before the shared
connection's waiting transaction goes in (see `_run`)."""


class InboxUnavailable(Exception):
    """The body was not committed in time (or at all): the channel should deliver it again."""


@dataclass
class _Waiting:
    arrival: Arrival
    done: asyncio.Future[None]


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(InboxUnavailable("the store did not commit in time"))


class InboxWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int,
        timeout: float,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._timeout = timeout
        self._on_commit = on_commit
        # Bounded, so that a stalled store turns into quick 503s instead of unbounded memory.
        self._pending: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=max_batch * 16)
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def close(self) -> None:
        """Commit what is already waiting, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout=self._timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def append(self, arrival: Arrival) -> None:
        """Return once `arrival` is committed; `InboxUnavailable` if it was not, in time.

        A timeout does not cancel the insert: the row may still commit, and the channel's
        re-delivery is then filed as a known message id, which is a no-op.
        """
        if self._task is None:
            raise InboxUnavailable("the inbox writer is not running")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        try:
            self._pending.put_nowait(_Waiting(arrival, done))
        except asyncio.QueueFull:
            raise InboxUnavailable("too many webhooks waiting for the store") from None
        # A timer that fails the future, rather than `wait_for(shield(…))`: the same outcome
        # for a fraction of the cost (no inner task, no second future), on every webhook.
        timer = loop.call_later(self._timeout, _expire, done)
        try:
            await done
        finally:
            timer.cancel()

    async def _run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            # Webhooks that arrived during a commit are committed right after it, before the
            # shared connection's next transaction (on SQLite), for a few commits in a row:
            # otherwise each would wait for a whole transaction of the filer or a turn.
            # Bounded, so that the filer and the turns still get their turn under a steady
            # stream, a commit's worth of time apart.
            async with priority_commit(self._engine):
                for chained in range(1, _CHAIN + 1):
                    while len(batch) < self._max_batch and not self._pending.empty():
                        batch.append(self._pending.get_nowait())
                    try:
                        await self._commit(batch)
                    finally:
                        for _ in batch:
                            self._pending.task_done()
                    if chained == _CHAIN or self._pending.empty():
                        break
                    batch = [self._pending.get_nowait()]

    async def _commit(self, batch: list[_Waiting]) -> None:
        try:
            async with self._engine.begin() as connection:
                ends_with_next_statement(connection)  # its COMMIT in the INSERT's trip
                await append(connection, [w.arrival for w in batch])
        except Exception as exc:
            log.error("inbox.commit_failed", webhooks=len(batch), error=type(exc).__name__)
            failure = InboxUnavailable(f"commit failed: {type(exc).__name__}")
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_exception(failure)
                    # Marked retrieved: a request that timed out never awaits its future.
                    waiting.done.exception()
            return
        self.commits += 1
        INBOX_COMMITS.inc()
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_result(None)
        if self._on_commit is not None:
            self._on_commit()
