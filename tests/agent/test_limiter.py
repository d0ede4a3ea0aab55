"""UpstreamLimiter: concurrency cap, client-side RPM/TPM spacing, adaptive holds from the
upstream's rate-limit headers; unit tests on a fake clock, and one through the simulator."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from parley.agent.limiter import (
    MAX_HOLD_S,
    UpstreamLimiter,
    estimate_tokens,
    parse_reset,
    parse_retry_after,
)
from parley.agent.llm import LLM, create_client
from parley.errors import LLMError
from parley.testing import OpenAISimulator, ServerThread

T = TypeVar("T")


class FakeClock:
    """Virtual time: a sleeper is woken when `run` moves the clock to its wake-up time, so
    simultaneous callers see the same `now` and each one's start time is exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wake))
        await wake

    async def run(self, *calls: Awaitable[T]) -> list[T | BaseException]:
        """Run `calls` together, moving the clock only when every one of them is asleep."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        while not all(t.done() for t in tasks):
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                self.now, _, wake = heapq.heappop(self._sleepers)
                wake.set_result(None)
        return [t.exception() or t.result() for t in tasks]


def limiter(clock: FakeClock, **options: object) -> UpstreamLimiter:
    return UpstreamLimiter(clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


async def start_times(lim: UpstreamLimiter, clock: FakeClock, costs: list[int]) -> list[float]:
    """When each of several simultaneous callers got its slot, relative to the first."""
    t0 = clock()
    started: list[float] = []

    async def call(tokens: int) -> None:
        async with lim.slot(tokens=tokens):
            started.append(clock() - t0)

    await clock.run(*(call(c) for c in costs))
    return sorted(started)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1.5s", 1.5),
        ("1h2m3s", 3723.0),
        ("2", 2.0),
        (" 7s ", 7.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        (None, None),
    ],
)
def test_parse_reset(value: str | None, seconds: float | None) -> None:
    assert parse_reset(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_retry_after_prefers_milliseconds() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None


def test_estimate_tokens_is_chars_over_four_of_input_and_instructions() -> None:
    assert estimate_tokens({"input": "abcdef"}) == 2  # '"abcdef"' is 8 chars
    assert estimate_tokens({"input": "ab", "instructions": "x" * 9}) == 4  # 4 + 9 = 13 chars
    assert estimate_tokens({"model": "m"}) == 1  # 'null'


async def test_no_limits_means_no_waiting() -> None:
    clock = FakeClock()
    assert await start_times(limiter(clock), clock, [100] * 5) == [0.0] * 5
    assert clock.sleeps == []


async def test_rpm_burst_queues_evenly_spaced() -> None:
    clock = FakeClock()
    lim = limiter(clock, rpm=60, timeout_s=30)
    # 60 a minute is one a second: three at once start at 0, 1 and 2 s, none fails.
    assert await start_times(lim, clock, [1, 1, 1]) == pytest.approx([0.0, 1.0, 2.0])


async def test_tpm_spaces_calls_by_their_token_cost() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000, timeout_s=30)  # 100 tokens a second
    # The first goes at once; each later one waits for the tokens before it to drain.
    assert await start_times(lim, clock, [200, 100, 50]) == pytest.approx([0.0, 2.0, 3.0])


async def test_settle_corrects_the_estimate_with_real_usage() -> None:
    clock = FakeClock()
    lim = limiter(clock, tpm=6000, timeout_s=30)
    async with lim.slot(tokens=100) as permit:
        lim.settle(permit, 500)  # it really cost 500: the next call waits 5 s, not 1 s
    assert await start_times(lim, clock, [1]) == pytest.approx([5.0])

    refunded = limiter(FakeClock(), tpm=6000, timeout_s=30)
    async with refunded.slot(tokens=1000) as permit:
        refunded.settle(permit, 0)  # estimated high, used nothing: no wait at all
    await _enter(refunded)  # the fake clock has no sleeper to wake: it would hang on a wait


async def test_a_wait_longer_than_the_timeout_fails_retryably() -> None:
    clock = FakeClock()
    lim = limiter(clock, rpm=60, timeout_s=1.5)
    # Three at once: the 3rd would wait 2 s, past its 1.5 s budget; the 2nd's 1 s fits.
    outcomes = await clock.run(*(_enter(lim) for _ in range(3)))
    errors = [o for o in outcomes if isinstance(o, LLMError)]
    assert len(errors) == 1
    assert errors[0].retryable and errors[0].code == "client_rate_limited"
    assert errors[0].retry_after is not None and errors[0].retry_after > 1.5


async def _enter(lim: UpstreamLimiter) -> None:
    async with lim.slot():
        pass


async def test_remaining_zero_holds_new_calls_until_reset() -> None:
    clock = FakeClock()
    lim = limiter(clock, timeout_s=30)
    lim.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert lim.held_for == pytest.approx(1.5)
    assert await start_times(lim, clock, [1, 1]) == pytest.approx([1.5, 1.5])
    assert lim.held_for == 0.0

    lim.observe({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"})
    assert lim.held_for == pytest.approx(0.02)


async def test_remaining_above_zero_does_not_hold() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.observe(
        {
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert lim.held_for == 0.0


async def test_a_hold_past_the_timeout_fails_at_once() -> None:
    clock = FakeClock()
    lim = limiter(clock, timeout_s=5)
    lim.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"})
    with pytest.raises(LLMError) as caught:
        await _enter(lim)
    assert caught.value.code == "client_rate_limited" and caught.value.retryable
    assert clock.sleeps == []  # failed without waiting: the wait could never fit
    assert lim.held_for == pytest.approx(MAX_HOLD_S)  # a long reset is capped


async def test_429_retry_after_holds_but_other_statuses_do_not() -> None:
    clock = FakeClock()
    lim = limiter(clock, timeout_s=30)
    lim.observe({"retry-after": "4"}, status=503)
    assert lim.held_for == 0.0
    lim.observe({"retry-after": "4"}, status=429)
    assert lim.held_for == pytest.approx(4.0)
    lim.observe({"retry-after": "3600"}, status=429)
    assert lim.held_for == pytest.approx(MAX_HOLD_S)


async def test_concurrency_wait_is_bounded_by_the_timeout() -> None:
    lim = UpstreamLimiter(max_concurrency=1, timeout_s=0.1)
    async with lim.slot():
        with pytest.raises(LLMError) as caught:
            await _enter(lim)
    assert caught.value.code == "client_rate_limited"
    await _enter(lim)  # the slot was given back


# --- through the simulator, with the SDK --------------------------------------------------


async def test_concurrency_cap_runs_calls_in_waves(
    openai_sim: OpenAISimulator, openai_server: tuple[OpenAISimulator, ServerThread]
) -> None:
    openai_sim.latency = 0.3
    client = create_client(
        api_key="k", base_url=openai_server[1].url + "/v1", timeout_s=5, max_retries=0
    )
    llm = LLM(client, UpstreamLimiter(max_concurrency=2, timeout_s=5))
    try:
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(llm.respond(model="gpt-5-mini", input=f"hi {n}") for n in range(4))
        )
        elapsed = time.perf_counter() - started
    finally:
        await llm.close()
    assert sorted(r.text for r in replies) == [f"Echo: hi {n}" for n in range(4)]
    assert all(r.usage.input_tokens > 0 for r in replies)
    # Two at a time, 0.3 s each: two waves.
    assert elapsed >= 0.6
    assert len(openai_sim.response_requests) == 4


async def test_429_the_sdk_gave_up_on_holds_the_next_call(
    openai_sim: OpenAISimulator, openai_server: tuple[OpenAISimulator, ServerThread]
) -> None:
    openai_sim.inject(429, headers={"retry-after": "0.4"}, code="rate_limit_exceeded")
    client = create_client(
        api_key="k", base_url=openai_server[1].url + "/v1", timeout_s=5, max_retries=0
    )
    lim = UpstreamLimiter(timeout_s=5)
    llm = LLM(client, lim)
    try:
        with pytest.raises(LLMError) as caught:
            await llm.respond(model="gpt-5-mini", input="one")
        assert caught.value.status == 429 and caught.value.retryable
        assert lim.held_for > 0.2
        started = time.perf_counter()
        reply = await llm.respond(model="gpt-5-mini", input="two")
        assert time.perf_counter() - started >= 0.2
    finally:
        await llm.close()
    assert reply.text == "Echo: two"
