"""Queues for the queue tests: a real Redis (started here, or the one PARLEY_TEST_REDIS_URL names),
flushed before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parley.queue.base import Queue
from parley.queue.memory import MemoryQueue
from parley.queue.redis import RedisQueue, create_client

# Small enough that a takeover test is quick, large enough for a loaded test machine.
LEASE_MS = 600
CLAIM_IDLE_MS = 600


class RedisQueues:
    """Makes RedisQueue instances ("workers") on one Redis, and closes them all at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[RedisQueue] = []

    def __call__(self, name: str = "", **options: int) -> RedisQueue:
        options = {"lease_ms": LEASE_MS, "claim_idle_ms": CLAIM_IDLE_MS, **options}
        consumer = name or f"worker-{len(self.made) + 1}"
        queue = RedisQueue.from_url(self.url, consumer=consumer, **options)
        self.made.append(queue)
        return queue

    async def close(self) -> None:
        for queue in self.made:
            await queue.close()


@pytest.fixture
async def redis_queues(redis_url: str) -> AsyncIterator[RedisQueues]:
    client = create_client(redis_url)
    await client.flushdb()
    await client.aclose()
    queues = RedisQueues(redis_url)
    yield queues
    await queues.close()


@pytest.fixture
async def redis_queue(redis_queues: RedisQueues) -> RedisQueue:
    return redis_queues()


@pytest.fixture(params=["memory", "redis"])
async def queue(request: pytest.FixtureRequest, redis_queues: RedisQueues) -> AsyncIterator[Queue]:
    """Every implementation of the Queue protocol, for the contract tests."""
    if request.param == "redis":
        yield redis_queues()
        return
    memory = MemoryQueue()
    yield memory
    await memory.close()
