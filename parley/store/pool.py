"""SQLAlchemy's asyncio connection pool with its waiters served first come, first served.

SQLAlchemy's `AsyncAdaptedQueuePool` keeps its idle connections in an `asyncio.Queue`. A
connection given back wakes the oldest waiter, but a checkout that arrives before that
waiter runs finds the connection idle and takes it, and the waiter, finding none, goes to
the back of the line (SQLAlchemy issue 7679; sqlx and mysql_async fixed the same in their
pools). Under a steady load past the pool's size some checkouts lose that race again and
again: at 64 `/v1` callers on 20 pooled connections the median checkout waited 19 ms and the
slowest 1 % over 1.1 s, and so did those requests.

`FairQueue` hands a connection given back to the oldest waiter directly, and a checkout
takes an idle connection only when nobody waits before it. No library provides such a queue
for SQLAlchemy's pool interface (`QueueCommon`), so it is here; `FairAsyncQueuePool` is
SQLAlchemy's pool with it, everything else unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

from sqlalchemy import exc
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import queue as sqla_queue
from sqlalchemy.util.concurrency import await_

_T = TypeVar("_T")


class FairQueue(sqla_queue.QueueCommon[_T]):
    """A pool's idle connections, and the checkouts that wait for one, in order.

    An item is in `_items` only while nobody waits: `put` hands it straight to the oldest
    waiter that still waits. `maxsize` bounds the idle items (0: no bound), as the pool
    expects: a connection given back to a full pool is closed (an overflow one)."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: collections.deque[_T] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_T]] = collections.deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> int:
        """Checkouts waiting for an item."""
        return sum(not waiter.done() for waiter in self._waiters)

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            raise sqla_queue.Full()
        self._items.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        # Never blocks: the pool gives back at most the connections it handed out.
        self.put_nowait(item)

    def get_nowait(self) -> _T:
        if not self._items:
            raise sqla_queue.Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    async def take(self, timeout: float | None) -> _T:
        """An idle item if nobody waits for one, else the next given back, in turn."""
        if self._items:
            return self.get_nowait()
        return await self._wait(timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        # An idle item while others wait cannot be: `put_nowait` gives it to them.
        if self._items or not block:
            return self.get_nowait()
        return await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> _T:
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed an item in the same step as the timeout or the cancellation:
                # it goes to the next in line.
                self.put_nowait(waiter.result())
            else:
                # Cancelled with the task; a `put_nowait` may have dropped it already.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise sqla_queue.Empty() from None
            raise


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool` whose checkouts are served in the order they came."""

    _queue_class = FairQueue  # type: ignore[assignment]

    @property
    def opened(self) -> bool:
        """Whether all of the pool's connections are open (its places all taken or idle)."""
        return self.overflow() >= 0

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """One of the pool's places, taken in turn with its checkouts and held as a checkout
        holds it, but with no connection checked out: for work sent on the same connection
        by other means (`store.direct`) that must count against the pool's bound. Once the
        pool is `opened` only: before, no place may be given back to wait for."""
        queue = cast(FairQueue[Any], self._pool)
        try:
            item = await queue.take(self._timeout)
        except sqla_queue.Empty:
            raise exc.TimeoutError(
                f"no place in the pool of {self.size()} after {self._timeout:.0f} s"
            ) from None
        try:
            yield
        finally:
            queue.put_nowait(item)
