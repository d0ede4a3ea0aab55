"""Sends per second per account: each send takes the account's next free slot, `1 / rate`
seconds after the one before (a leaky bucket kept as its next slot, GCRA without burst).

Across processes the slot lives in Redis (one key per account, one script call per send, on
Redis's clock); with no Redis, in this process's memory. A send never waits long for its slot:
when the next free one is further away than `max_wait`, nothing is reserved and the caller
puts the message back until then, so a backlog waits in the outbox, not in sleeping tasks.

When Redis does not answer, each process paces on its own (as the API's rate limit does): the
sends still go out, at up to the rate times the number of processes, until Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parley.queue import keys

log = structlog.get_logger(__name__)

REDIS_TIMEOUT_S = 0.5
MAX_WAIT_S = 1.0
"""The longest a send waits in place for its slot; a later slot means "come back later"."""


@dataclass(frozen=True, slots=True)
class Slot:
    granted: bool
    wait: float
    """Seconds until the slot (granted), or until the next free one (not granted)."""


class Pacer(Protocol):
    async def reserve(self, account: str, rate: float, max_wait: float = MAX_WAIT_S) -> Slot:
        """Take `account`'s next send slot at `rate` per second, if it is within `max_wait`."""
        ...

    async def pause(self, account: str, seconds: float) -> None:
        """No slot for `account` in the next `seconds` (the channel throttled it)."""
        ...

    async def close(self) -> None: ...


class MemoryPacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next: dict[str, float] = {}

    async def reserve(self, account: str, rate: float, max_wait: float = MAX_WAIT_S) -> Slot:
        now = self._clock()
        start = max(self._next.get(account, 0.0), now)
        wait = start - now
        if wait > max_wait:
            return Slot(False, wait)
        self._next[account] = start + 1.0 / rate
        return Slot(True, wait)

    async def pause(self, account: str, seconds: float) -> None:
        self._next[account] = max(self._next.get(account, 0.0), self._clock() + seconds)

    async def close(self) -> None:
        return None


class RedisPacer:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._script = client.register_script(keys.PACE_SCRIPT)
        self._fallback = MemoryPacer()
        self._degraded = False

    @classmethod
    def from_url(cls, url: str) -> RedisPacer:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            client_name="parley-pacer",
        )
        return cls(client)

    async def reserve(self, account: str, rate: float, max_wait: float = MAX_WAIT_S) -> Slot:
        interval_us = max(1, round(1_000_000 / rate))
        try:
            granted, wait_us = await self._call(account, interval_us, round(max_wait * 1e6), 0)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return await self._fallback.reserve(account, rate, max_wait)
        self._up()
        return Slot(bool(granted), wait_us / 1e6)

    async def pause(self, account: str, seconds: float) -> None:
        try:
            await self._call(account, 1, 0, max(1, round(seconds * 1e6)))
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            await self._fallback.pause(account, seconds)
            return
        self._up()

    async def _call(
        self, account: str, interval_us: int, max_wait_us: int, pause_us: int
    ) -> list[int]:
        async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
            result = await self._script(
                keys=[keys.send_pace(account)], args=[interval_us, max_wait_us, pause_us]
            )
        return [int(value) for value in result]

    def _down(self, exc: BaseException) -> None:
        if not self._degraded:
            log.warning("pacing.redis_unavailable", error=type(exc).__name__)
            self._degraded = True

    def _up(self) -> None:
        if self._degraded:
            log.info("pacing.redis_back")
            self._degraded = False

    async def close(self) -> None:
        await self._client.aclose()


def build_pacer(redis_url: str | None) -> Pacer:
    """Shared through Redis when the processes share one, else this process's own."""
    return RedisPacer.from_url(redis_url) if redis_url else MemoryPacer()
