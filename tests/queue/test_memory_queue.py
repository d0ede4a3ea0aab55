"""The queue's contract: signals deduplicated, a conversation held by one claimer at a time,
and a signal that arrives while it is held is not lost."""

from __future__ import annotations

import asyncio

from parley.queue.memory import MemoryQueue


async def test_signals_are_claimed_in_order_and_deduplicated() -> None:
    queue = MemoryQueue()
    await queue.signal_many([3, 1, 3, 2, 1])
    assert await queue.depth() == 3
    claimed = [await queue.claim(timeout=0.1) for _ in range(3)]
    assert claimed == [3, 1, 2]
    assert await queue.claim(timeout=0.05) is None


async def test_a_held_conversation_is_not_claimed_twice_and_is_requeued_on_release() -> None:
    queue = MemoryQueue()
    await queue.signal(7)
    assert await queue.claim(timeout=0.1) == 7
    await queue.signal(7)  # new work while a turn runs
    assert await queue.claim(timeout=0.05) is None
    await queue.release(7)
    assert await queue.claim(timeout=0.1) == 7
    await queue.release(7)
    assert await queue.claim(timeout=0.05) is None


async def test_claim_wakes_up_when_a_signal_arrives() -> None:
    queue = MemoryQueue()
    waiter = asyncio.create_task(queue.claim(timeout=5))
    await asyncio.sleep(0)
    await queue.signal(42)
    assert await asyncio.wait_for(waiter, timeout=1) == 42
