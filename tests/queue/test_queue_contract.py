"""The queue's contract, run against every implementation (in-process and Redis): signals
deduplicated, a conversation held by one claimer at a time, and a signal that arrives while it
is held is not lost but answered after the release."""

from __future__ import annotations

import asyncio
import time

from parley.queue.base import Queue


async def test_signals_are_claimed_in_order_and_deduplicated(queue: Queue) -> None:
    await queue.signal_many([3, 1, 3, 2, 1])
    assert await queue.depth() == 3
    claimed = [await queue.claim(timeout=0.5) for _ in range(3)]
    assert claimed == [3, 1, 2]
    assert await queue.depth() == 0
    assert await queue.claim(timeout=0.05) is None


async def test_a_held_conversation_is_not_claimed_twice_and_is_requeued_on_release(
    queue: Queue,
) -> None:
    await queue.signal(7)
    assert await queue.claim(timeout=0.5) == 7
    await queue.signal(7)  # new work while a turn runs
    assert await queue.claim(timeout=0.05) is None
    await queue.release(7)
    assert await queue.claim(timeout=0.5) == 7
    await queue.release(7)
    assert await queue.claim(timeout=0.05) is None


async def test_signals_while_held_coalesce_into_one_more_claim(queue: Queue) -> None:
    await queue.signal(5)
    assert await queue.claim(timeout=0.5) == 5
    await queue.signal(5)
    await queue.signal_many([5, 5])
    assert await queue.depth() == 0  # held: nothing waits until the release
    await queue.release(5)
    assert await queue.depth() == 1
    assert await queue.claim(timeout=0.5) == 5
    await queue.release(5)
    assert await queue.claim(timeout=0.05) is None


async def test_other_conversations_are_claimed_while_one_is_held(queue: Queue) -> None:
    await queue.signal_many([1, 2])
    assert await queue.claim(timeout=0.5) == 1
    await queue.signal(1)
    assert await queue.claim(timeout=0.5) == 2
    await queue.release(2)
    await queue.release(1)
    assert await queue.claim(timeout=0.5) == 1


async def test_claim_wakes_up_when_a_signal_arrives(queue: Queue) -> None:
    waiter = asyncio.create_task(queue.claim(timeout=5))
    await asyncio.sleep(0.05)
    await queue.signal(42)
    assert await asyncio.wait_for(waiter, timeout=1) == 42


async def test_claim_waits_for_its_timeout_and_no_longer(queue: Queue) -> None:
    started = time.monotonic()
    assert await queue.claim(timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 1.5


async def test_nothing_signalled_is_a_no_op(queue: Queue) -> None:
    await queue.signal_many([])
    assert await queue.depth() == 0
    await queue.release(99)  # never held
    assert await queue.claim(timeout=0.05) is None
    assert await queue.ping() is True
