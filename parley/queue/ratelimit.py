"""Requests per minute per API user (all of a user's tokens share one budget): a fixed
one-minute window, counted in Redis when the processes share one (`parley api` scale-out)
and in process memory when they do not.

A fixed window is one `INCR` + `EXPIRE` per request, atomic in a MULTI/EXEC pipeline on one key,
so every process sees the same count. Its known cost is a burst of up to twice the limit across
a window's edge; a sliding log would cost a sorted set per token for little gain at per-minute
limits. The `retry-after` is the time left in the window.

When Redis does not answer (each call is bounded by a short timeout), the limit is kept in this
process's memory instead: limits still hold per process, and a Redis outage neither blocks every
API caller (a 503) nor turns into a 500. The database, not Redis, is what the API needs to work,
so an unshared limit for a while is the smaller harm.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parley.queue import keys

log = structlog.get_logger(__name__)

WINDOW_S = 60
REDIS_TIMEOUT_S = 0.5
"""A rate check is on every request's path: it may cost at most this much when Redis is slow."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int
    """Whole seconds until the window ends (0 when allowed)."""


class RateLimiter(Protocol):
    async def hit(self, key: str) -> Verdict:
        """Count one request for `key` and say whether it is within the limit."""
        ...

    async def close(self) -> None: ...


def _window(now: float) -> tuple[int, int]:
    """The current window's number and the whole seconds left in it (at least 1)."""
    window = int(now // WINDOW_S)
    return window, max(1, math.ceil((window + 1) * WINDOW_S - now))


class Unlimited:
    async def hit(self, key: str) -> Verdict:
        return Verdict(True, 0)

    async def close(self) -> None:
        return None


OVERFLOW_KEY = "…overflow"
"""Where `MemoryRateLimiter` counts new keys once it holds `max_keys`."""


class MemoryRateLimiter:
    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.time,
        max_keys: int | None = None,
    ) -> None:
        """`max_keys` bounds the memory: beyond it, new keys in a window share one count
        (so many keys at once are limited together, never forgotten)."""
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._window = -1
        self._counts: dict[str, int] = {}

    def _roll(self) -> int:
        window, left = _window(self._clock())
        if window != self._window:  # every key's window ends together: forget them all
            self._window, self._counts = window, {}
        return left

    def _bounded(self, key: str) -> str:
        full = self._max_keys is not None and len(self._counts) >= self._max_keys
        return OVERFLOW_KEY if full and key not in self._counts else key

    async def hit(self, key: str) -> Verdict:
        left = self._roll()
        key = self._bounded(key)
        count = self._counts[key] = self._counts.get(key, 0) + 1
        return Verdict(True, 0) if count <= self.limit else Verdict(False, left)

    def spent(self, key: str) -> Verdict:
        """Whether `key` has used its whole budget in this window, without counting a hit."""
        left = self._roll()
        key = self._bounded(key)
        return Verdict(False, left) if self._counts.get(key, 0) >= self.limit else Verdict(True, 0)

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, limit: int) -> None:
        self.limit = limit
        self._client = client
        self._fallback = MemoryRateLimiter(limit)
        self._degraded = False

    @classmethod
    def from_url(cls, url: str, limit: int) -> RedisRateLimiter:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            client_name="parley-ratelimit",
        )
        return cls(client, limit)

    async def hit(self, key: str) -> Verdict:
        now = time.time()
        window, left = _window(now)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                count = await self._count(keys.api_rate(key, window))
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._degraded:
                log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
                self._degraded = True
            return await self._fallback.hit(key)
        if self._degraded:
            log.info("ratelimit.redis_back")
            self._degraded = False
        return Verdict(True, 0) if count <= self.limit else Verdict(False, left)

    async def _count(self, key: str) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_S + 5)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self._client.aclose()


def build_rate_limiter(limit: int, redis_url: str | None) -> RateLimiter:
    """PARLEY_API_RATE_LIMIT requests per minute per user; 0 turns the limit off."""
    if limit <= 0:
        return Unlimited()
    if redis_url is None:
        return MemoryRateLimiter(limit)
    return RedisRateLimiter.from_url(redis_url, limit)
