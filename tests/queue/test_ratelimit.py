"""The per-token rate limit's windows, and its fallback when Redis does not answer."""

from __future__ import annotations

import redis.asyncio as aioredis

from parley.queue.ratelimit import MemoryRateLimiter, RedisRateLimiter, Verdict
from tests.factories import fresh_window
from tests.servers import free_port


async def test_a_window_allows_the_limit_then_says_how_long_to_wait() -> None:
    now = [120.0]
    limiter = MemoryRateLimiter(2, clock=lambda: now[0])
    assert [await limiter.hit("a") for _ in range(2)] == [Verdict(True, 0)] * 2
    now[0] = 150.2
    assert await limiter.hit("a") == Verdict(False, 30)
    assert await limiter.hit("b") == Verdict(True, 0)
    now[0] = 180.0  # the next minute starts afresh
    assert await limiter.hit("a") == Verdict(True, 0)


async def test_without_redis_the_limit_holds_in_this_process() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client, 1)
    try:
        assert (await limiter.hit("a")).allowed
        assert not (await limiter.hit("a")).allowed
    finally:
        await limiter.close()


async def test_redis_counts_for_every_process(redis_url: str) -> None:
    await fresh_window()
    one, two = RedisRateLimiter.from_url(redis_url, 2), RedisRateLimiter.from_url(redis_url, 2)
    token = f"t{free_port()}"
    try:
        verdicts = [await one.hit(token), await two.hit(token), await one.hit(token)]
    finally:
        await one.close()
        await two.close()
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert 1 <= verdicts[2].retry_after <= 60
