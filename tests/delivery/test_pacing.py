"""The send pacer: slots 1/rate apart per account, in memory and shared through Redis."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from parley.delivery.pacing import MemoryPacer, Pacer, RedisPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_memory_slots_are_one_interval_apart_per_account() -> None:
    clock = Clock()
    pacer = MemoryPacer(clock)
    waits = [(await pacer.reserve("a", rate=4)).wait for _ in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    assert (await pacer.reserve("b", rate=4)).wait == 0.0  # another account is not held up
    refused = await pacer.reserve("a", rate=4, max_wait=0.9)
    assert not refused.granted and refused.wait == pytest.approx(1.0)
    clock.now += 1.0
    assert (await pacer.reserve("a", rate=4)).wait == 0.0  # nothing reserved by the refusal


async def test_memory_pause_holds_the_account() -> None:
    clock = Clock()
    pacer = MemoryPacer(clock)
    await pacer.pause("a", 3.0)
    slot = await pacer.reserve("a", rate=80)
    assert not slot.granted and slot.wait == pytest.approx(3.0)


@pytest.fixture
async def redis_pacer(redis_url: str) -> AsyncIterator[RedisPacer]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    await client.flushdb()
    await client.aclose()
    pacer = RedisPacer.from_url(redis_url)
    yield pacer
    await pacer.close()


async def test_redis_slots_are_shared_by_every_pacer(
    redis_pacer: RedisPacer, redis_url: str
) -> None:
    other: Pacer = RedisPacer.from_url(redis_url)
    # When each slot is due, as far as this process can tell: a slot's wait counts from when
    # Redis ran the reservation, somewhere between the call and its answer.
    due: list[tuple[float, float]] = []
    try:
        for pacer in (redis_pacer, other, redis_pacer, other):
            before = time.monotonic()
            slot = await pacer.reserve("acct", rate=10)
            assert slot.granted
            due.append((before + slot.wait, time.monotonic() + slot.wait))
    finally:
        await other.close()
    # Each slot is one interval (0.1 s) after the one before, whoever took it.
    for (earliest, latest), (next_earliest, next_latest) in itertools.pairwise(due):
        assert next_earliest - latest - 0.01 <= 0.1 <= next_latest - earliest + 0.01


async def test_redis_refuses_a_slot_too_far_and_honours_a_pause(redis_pacer: RedisPacer) -> None:
    await redis_pacer.pause("acct", 5.0)
    slot = await redis_pacer.reserve("acct", rate=80, max_wait=1.0)
    assert not slot.granted and slot.wait == pytest.approx(5.0, abs=0.1)
    assert (await redis_pacer.reserve("other", rate=80)).wait == 0.0


async def test_redis_down_falls_back_to_memory() -> None:
    pacer = RedisPacer.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        first = await pacer.reserve("acct", rate=2)
        second = await pacer.reserve("acct", rate=2)
    finally:
        await pacer.close()
    assert first.granted and second.granted
    assert second.wait == pytest.approx(0.5, abs=0.05)
