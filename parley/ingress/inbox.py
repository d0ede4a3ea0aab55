"""Group commit: many concurrent webhooks appended to the inbox in one transaction.

Each request adds its body and a future to the newest batch; one task takes the batches in
order (each up to `max_batch`), inserts each with one statement, commits, and resolves its
futures. A commit is the expensive part of accepting a webhook (a sync to disk, a round trip
to PostgreSQL), so under load one commit acknowledges many webhooks, and at low load a webhook
waits for no one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.observability.metrics import INBOX_COMMITS
from parley.store.db import ends_with_next_statement, priority_commit
from parley.store.direct import DirectWrites
from parley.store.queries.inbox import Arrival, append, append_directly, append_held

log = structlog.get_logger(__name__)


PRESSED = 16
"""Webhooks in one commit from which the door counts as pressed (`InboxWriter.quiet` clear):
they came in much faster than it commits. At a few hundred a second each commit takes one or
two; a disk slow to sync (10 ms) makes it take a few at such rates, where the door is far from
busy and filing must not wait, hence sixteen. A burst that saturates the door takes dozens per
commit (about 30 in `bench/ingest.py`'s 64 connections)."""

_CHAIN = 4
"""Most commits in a row the writer makes while webhooks keep arriving, before the shared
connection's waiting transaction goes in (see `_run`)."""


class InboxUnavailable(Exception):
    """The body was not committed in time (or at all): the channel should deliver it again."""


class _Batch:
    """Webhooks committed in one transaction, and the one timer that answers them all 503
    should their commit not come in time."""

    __slots__ = ("arrivals", "timer", "waiters")

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.timer: asyncio.TimerHandle | None = None


def _expire(batch: _Batch) -> None:
    _fail(batch, InboxUnavailable("the store did not commit in time"))


def _fail(batch: _Batch, failure: InboxUnavailable) -> None:
    if batch.timer is not None:
        batch.timer.cancel()
    for done in batch.waiters:
        if not done.done():
            done.set_exception(failure)
            # Marked retrieved: a request that timed out never awaits its future.
            done.exception()


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
        self._direct = DirectWrites.of(engine)
        """On SQLite, the writer's own line, on which a commit is one trip without a
        connection of SQLAlchemy's once the first has opened it (`append_directly`)."""
        self._holds = engine.dialect.driver == "asyncpg"
        self._held: AsyncConnection | None = None
        """On PostgreSQL (asyncpg), the writer's connection, held from the commit that follows
        a rest until the writer rests again (`append_held`): while webhooks keep coming, a
        commit does not take it from the pool and give it back (0.23 ms of CPU each time)."""
        self._max_batch = max_batch
        self._timeout = timeout
        self._on_commit = on_commit
        # Bounded, so that a stalled store turns into quick 503s instead of unbounded memory.
        self._limit = max_batch * 16
        self._batches: deque[_Batch] = deque()
        self._open: _Batch | None = None  # the newest batch, still taking webhooks
        self._waiting = 0  # webhooks in `_batches`
        self._wake: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()  # nothing waiting, nothing being committed
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.quiet = asyncio.Event()
        """Set unless the last commit took `PRESSED` webhooks or more and more are waiting:
        the filer of this process waits for it (`Filer.give_way_to`), so that a burst's
        acknowledgements get the event loop first."""
        self.quiet.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def close(self, grace: float | None = None) -> None:
        """Commit what is already waiting (for at most `grace` seconds, the inbox timeout by
        default), then stop; webhooks still waiting are answered 503."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._idle.wait(), timeout=self._timeout if grace is None else grace
            )
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._let_go(broken=True)  # it may have been stopped mid-INSERT
        self.quiet.set()  # nothing is acknowledged here any more: the filer goes on
        stopped = InboxUnavailable("the inbox writer stopped")
        while self._batches:
            _fail(self._take(), stopped)

    async def append(self, arrival: Arrival) -> None:
        """Return once `arrival` is committed; `InboxUnavailable` if it was not, in time.

        Webhooks join the newest batch that the writer has not taken yet (a new one once it
        holds `max_batch`). The batch's timer starts with its first webhook, so a webhook that
        joins later may be answered 503 up to one commit's time early. A timeout does not
        cancel the insert: the row may still commit, and the channel's re-delivery is then
        filed as a known message id, which is a no-op.

        Plain lists and one timer per batch, rather than a queue and a timer per webhook: this
        runs for every webhook, and those cost a dozen Python calls each time.
        """
        if self._task is None:
            raise InboxUnavailable("the inbox writer is not running")
        if self._waiting >= self._limit:
            raise InboxUnavailable("too many webhooks waiting for the store")
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None or len(batch.arrivals) >= self._max_batch:
            batch = self._open = _Batch()
            batch.timer = loop.call_later(self._timeout, _expire, batch)
            self._batches.append(batch)
            self._idle.clear()
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)
        done: asyncio.Future[None] = loop.create_future()
        batch.arrivals.append(arrival)
        batch.waiters.append(done)
        self._waiting += 1
        await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._batches:
                # Back to the pool while resting: checked there before its next use, should
                # the server have dropped it meanwhile (`store.db._ping_after_idle`).
                await self._let_go()
                self.quiet.set()
                self._idle.set()
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            # Webhooks that arrived during a commit are committed right after it, before the
            # shared connection's next transaction (on SQLite), for a few commits in a row:
            # otherwise each would wait for a whole transaction of the filer or a turn.
            # Bounded, so that the filer and the turns still get their turn under a steady
            # stream, a commit's worth of time apart.
            async with priority_commit(self._engine):
                for chained in range(1, _CHAIN + 1):
                    await self._commit(self._take())
                    if chained == _CHAIN or not self._batches:
                        break

    def _take(self) -> _Batch:
        """The oldest batch, which takes no more webhooks from now on."""
        batch = self._batches.popleft()
        if batch is self._open:
            self._open = None
        self._waiting -= len(batch.arrivals)
        return batch

    async def _commit(self, batch: _Batch) -> None:
        try:
            direct = self._direct
            if self._holds:  # PostgreSQL
                if self._held is None:
                    self._held = await self._engine.connect()
                await append_held(self._held, batch.arrivals)
            elif direct is not None and direct.ready:
                await append_directly(direct, batch.arrivals)
            else:
                async with self._engine.begin() as connection:
                    ends_with_next_statement(connection)  # its COMMIT in the INSERT's trip
                    await append(connection, batch.arrivals)
        except asyncio.CancelledError:  # the writer stopped mid-commit: none is left waiting
            _fail(batch, InboxUnavailable("the inbox writer stopped"))
            raise
        except Exception as exc:
            log.error("inbox.commit_failed", webhooks=len(batch.arrivals), error=type(exc).__name__)
            _fail(batch, InboxUnavailable(f"commit failed: {type(exc).__name__}"))
            await self._let_go(broken=True)  # the next commit takes a new one
            return
        if batch.timer is not None:
            batch.timer.cancel()
        if len(batch.arrivals) >= PRESSED:
            self.quiet.clear()
        else:
            self.quiet.set()
        self.commits += 1
        INBOX_COMMITS.inc()
        for done in batch.waiters:
            if not done.done():
                done.set_result(None)
        if self._on_commit is not None:
            self._on_commit()

    async def _let_go(self, *, broken: bool = False) -> None:
        """Give the held connection back to the pool; `broken`: close it instead."""
        held, self._held = self._held, None
        if held is None:
            return
        try:
            if broken:
                await held.invalidate()
            await held.close()
        except Exception as exc:  # the pool has dropped it: nothing else to do
            log.warning("inbox.connection_not_returned", error=type(exc).__name__)
