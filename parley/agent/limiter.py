"""Upstream discipline for the Responses API: how many calls run at once, how fast they start,
and when to stop calling because OpenAI said its limits are spent.

- A semaphore caps concurrent calls (`OPENAI_MAX_CONCURRENCY`).
- Optional client-side request and token rates (`OPENAI_RPM`, `OPENAI_TPM`), kept as GCRA
  (virtual-schedule) buckets: each call reserves the next start time, so a burst queues in
  arrival order and is spread evenly. OpenAI quantizes its per-minute limits to shorter
  windows, so evenly spaced calls stay under them where a whole minute's burst would not.
- Adaptive holds: when a response says `x-ratelimit-remaining-*` is 0, or a 429 that the SDK
  gave up on carries `retry-after`, new calls wait until then.

Callers wait, never fail, unless the wait would exceed the call's own timeout budget
(`OPENAI_TIMEOUT`): then `LLMError(code="client_rate_limited", retryable=True)`, so the
turn is retried later instead of hanging a worker.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from parley.errors import LLMError

log = structlog.get_logger(__name__)

MAX_HOLD_S = 60.0
"""The longest a single upstream signal may pause new calls; a bogus header cannot stall us."""
LOUD_WAIT_S = 1.0
"""Waits at least this long are logged at info; shorter ones (routine spacing) at debug."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_reset(value: str | None) -> float | None:
    """Seconds in an `x-ratelimit-reset-*` value (`"1s"`, `"6m0s"`, `"20ms"`, `"1.5s"`)."""
    if value is None:
        return None
    text = value.strip().lower()
    try:
        return float(text)  # a bare number: seconds
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    # Every character must belong to a part, or "5x" would read as 5 s.
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds only; HTTP dates are ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None


IMAGE_TOKENS = 1000
"""What an `input_image` is guessed to cost: its data URL's length says nothing (a 5 MB
photo is ~7 M characters of base64, but the model sees it as about a thousand tokens)."""


def estimate_tokens(params: Mapping[str, Any]) -> int:
    """Tokens a call will use, guessed before it is made: chars / 4 of its input's JSON and
    its instructions, images at `IMAGE_TOKENS` each. Corrected with the real usage afterwards
    (`UpstreamLimiter.settle`)."""
    images = [0]
    text_input = _without_images(params.get("input"), images)
    chars = len(json.dumps(text_input, ensure_ascii=False, default=str))
    chars += len(str(params.get("instructions") or ""))
    return math.ceil(chars / 4) + images[0] * IMAGE_TOKENS


def _without_images(value: Any, count: list[int]) -> Any:
    """`value` with each `input_image` part left out, counted in `count[0]`. Only lists and
    dicts are walked into: the strings and numbers in them are kept without a call each."""
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, dict) and item.get("type") == "input_image":
                count[0] += 1
            elif isinstance(item, (dict, list)):
                kept.append(_without_images(item, count))
            else:
                kept.append(item)
        return kept
    if isinstance(value, dict):
        return {
            key: _without_images(item, count) if isinstance(item, (dict, list)) else item
            for key, item in value.items()
        }
    return value


def _remaining_is_zero(value: str | None) -> bool:
    try:
        return value is not None and int(float(value)) <= 0
    except ValueError:
        return False


class _Schedule:
    """A GCRA bucket: `rate_per_minute` units, spread evenly. Cost is charged from the start
    time on, so one call bigger than the rate still goes (it only delays the ones after it)."""

    def __init__(self, rate_per_minute: int) -> None:
        self.unit_s = 60.0 / rate_per_minute
        self.next_free = -math.inf

    def start_at(self, earliest: float) -> float:
        return max(earliest, self.next_free)

    def reserve(self, start: float, units: float) -> None:
        self.next_free = max(self.next_free, start) + units * self.unit_s

    def adjust(self, units: float) -> None:
        self.next_free += units * self.unit_s


@dataclass(slots=True)
class Permit:
    """One call's place in the limiter; `tokens` is what was charged for it so far."""

    tokens: int


class UpstreamLimiter:
    def __init__(
        self,
        *,
        max_concurrency: int = 32,
        rpm: int | None = None,
        tpm: int | None = None,
        timeout_s: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._requests = _Schedule(rpm) if rpm else None
        self._tokens = _Schedule(tpm) if tpm else None
        self._timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        self._hold_until = -math.inf
        self._hold_reason = ""

    @asynccontextmanager
    async def slot(self, *, tokens: int = 0) -> AsyncIterator[Permit]:
        """Wait for a turn to call upstream; the call is made inside the `async with`."""
        deadline = self._clock() + self._timeout_s
        await self._acquire(deadline)
        try:
            await self._wait_out_hold(deadline)
            await self._wait_for_rate(tokens, deadline)
            # A hold may have been set by a response that arrived while this call was spaced.
            await self._wait_out_hold(deadline)
            yield Permit(tokens)
        finally:
            self._semaphore.release()

    def settle(self, permit: Permit, actual_tokens: int) -> None:
        """Charge the real usage instead of the estimate (a refund when it was lower)."""
        if self._tokens is not None:
            self._tokens.adjust(actual_tokens - permit.tokens)
        permit.tokens = actual_tokens

    def observe(self, headers: Mapping[str, str], *, status: int | None = None) -> None:
        """Read an upstream answer's rate-limit headers; hold new calls if a limit is spent."""
        for kind in ("requests", "tokens"):
            if _remaining_is_zero(headers.get(f"x-ratelimit-remaining-{kind}")):
                reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
                self._hold(reset if reset is not None else 1.0, f"remaining_{kind}")
        if status == 429:
            retry_after = parse_retry_after(headers)
            if retry_after is not None:
                self._hold(retry_after, "retry_after")

    @property
    def held_for(self) -> float:
        """Seconds new calls are still held by an upstream signal (0 when not held)."""
        return max(0.0, self._hold_until - self._clock())

    # --- internals -----------------------------------------------------------------------
    def _hold(self, seconds: float, reason: str) -> None:
        until = self._clock() + min(max(seconds, 0.0), MAX_HOLD_S)
        if until > self._hold_until:
            self._hold_until, self._hold_reason = until, reason
            log.warning(
                "llm.upstream_limited", hold_s=round(until - self._clock(), 3), reason=reason
            )

    async def _acquire(self, deadline: float) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()  # free: no need for a timer task
            return
        budget = deadline - self._clock()
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=max(budget, 0.0))
        except TimeoutError:
            raise _too_long("concurrency", budget) from None

    async def _wait_out_hold(self, deadline: float) -> None:
        # Loop: a newer answer may extend the hold while we sleep.
        while (until := self._hold_until) > (now := self._clock()):
            if until > deadline:
                raise _too_long(self._hold_reason, until - now)
            await self._pause(until - now, self._hold_reason)

    async def _wait_for_rate(self, tokens: int, deadline: float) -> None:
        now = self._clock()
        start = now
        for schedule in (self._requests, self._tokens):
            if schedule is not None:
                start = schedule.start_at(start)
        if start > deadline:
            raise _too_long("rate", start - now)
        # Reserve before sleeping, with no await in between: later callers queue behind.
        if self._requests is not None:
            self._requests.reserve(start, 1)
        if self._tokens is not None:
            self._tokens.reserve(start, tokens)
        if start > now:
            await self._pause(start - now, "rate")

    async def _pause(self, seconds: float, reason: str) -> None:
        level = log.info if seconds >= LOUD_WAIT_S else log.debug
        level("llm.throttled", wait_s=round(seconds, 3), reason=reason)
        await self._sleep(seconds)


def _too_long(reason: str, wait_s: float) -> LLMError:
    return LLMError(
        f"client-side rate limit ({reason}): would wait {wait_s:.1f}s, longer than the timeout",
        retryable=True,
        retry_after=round(wait_s, 3),
        code="client_rate_limited",
    )
