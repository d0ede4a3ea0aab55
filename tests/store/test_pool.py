"""The connection pool serves its waiting checkouts first come, first served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import queue as sqla_queue
from sqlalchemy.util.concurrency import greenlet_spawn

from parley.store.db import create_engine
from parley.store.pool import FairAsyncQueuePool, FairQueue


async def _waiting(queue: FairQueue[Any], count: int) -> None:
    async with asyncio.timeout(5):
        # Nothing announces a checkout that starts to wait: one pass of the loop at a time.
        while queue.waiting < count:  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_a_connection_given_back_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    queue.put_nowait("connection")
    held = queue.get(False)
    first = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    second = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await _waiting(queue, 2)

    queue.put_nowait(held)
    # A checkout arriving before the woken waiter runs finds nothing idle (SQLAlchemy's own
    # queue gave it the connection, and sent the waiter to the back of the line).
    with pytest.raises(sqla_queue.Empty):
        queue.get(False)
    assert await first == "connection"
    assert not second.done()
    queue.put_nowait("connection")
    assert await second == "connection"
    assert queue.qsize() == 0 and queue.waiting == 0


async def test_a_waiter_that_times_out_leaves_the_line_and_raises_empty() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    with pytest.raises(sqla_queue.Empty):
        await greenlet_spawn(queue.get, True, 0.01)
    assert queue.waiting == 0
    queue.put_nowait("connection")  # kept idle: nobody waits for it any more
    assert queue.qsize() == 1 and queue.get(False) == "connection"


async def test_a_connection_handed_to_a_cancelled_waiter_goes_to_the_next_one() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    first = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    second = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await _waiting(queue, 2)
    queue.put_nowait("connection")  # handed to the first waiter...
    first.cancel()  # ...which is cancelled before it runs
    assert await second == "connection"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_full_queue_refuses_what_is_given_back_and_the_engine_uses_the_fair_pool(
    tmp_path: Path,
) -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    queue.put_nowait("one")
    with pytest.raises(sqla_queue.Full):  # an overflow connection: the pool closes it
        queue.put_nowait("two")

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1)
    try:
        assert isinstance(engine.pool, FairAsyncQueuePool)
        pooled = engine.pool._pool
        assert isinstance(pooled, FairQueue)
        async with engine.connect() as held:
            waiter = asyncio.create_task(_select_one(engine))
            await _waiting(pooled, 1)
            assert (await held.execute(text("SELECT 2"))).scalar() == 2
        assert await waiter == 1
    finally:
        await engine.dispose()


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT 1"))).scalar_one())
