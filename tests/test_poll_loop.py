"""PollLoop: a wake-up ends the wait at once, a failed round is tried again after its retry
wait, which a wake-up ends early only when the loop allows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from parley.poll_loop import PollLoop

LONG = 60.0  # a poll interval no test waits out


class Rounds:
    """A round that records when it ran and raises while `failing`."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.failing = 0
        self.changed = asyncio.Event()

    async def __call__(self) -> float:
        self.times.append(time.monotonic())
        self.changed.set()
        if self.failing:
            self.failing -= 1
            raise RuntimeError("the store is down")
        return LONG

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.times) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[PollLoop], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(loop: PollLoop) -> None:
        tasks.append(asyncio.create_task(loop.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_wake_up_starts_the_next_round_before_the_poll_interval(
    running: Callable[[PollLoop], None],
) -> None:
    rounds = Rounds()
    loop = PollLoop(rounds, failed="test.failed", retry=LONG)
    running(loop)
    await rounds.wait_for(1)

    loop.wake()

    await rounds.wait_for(2)


async def test_a_failed_round_is_tried_again_and_a_wake_up_may_end_the_wait(
    running: Callable[[PollLoop], None],
) -> None:
    rounds = Rounds()
    rounds.failing = 1
    loop = PollLoop(rounds, failed="test.failed", retry=LONG)
    running(loop)
    await rounds.wait_for(1)

    loop.wake()

    await rounds.wait_for(2)  # the failure did not end the loop


async def test_a_loop_deaf_during_its_retry_waits_it_out_whatever_wakes_it(
    running: Callable[[PollLoop], None],
) -> None:
    rounds = Rounds()
    rounds.failing = 1
    loop = PollLoop(rounds, failed="test.failed", retry=0.3, wake_during_retry=False)
    running(loop)
    await rounds.wait_for(1)

    loop.wake()
    await rounds.wait_for(2)

    assert rounds.times[1] - rounds.times[0] >= 0.3


async def test_stop_ends_a_waiting_loop() -> None:
    rounds = Rounds()
    loop = PollLoop(rounds, failed="test.failed", retry=LONG)
    task = asyncio.create_task(loop.run())
    await rounds.wait_for(1)

    loop.stop()

    await asyncio.wait_for(task, timeout=5)
    assert len(rounds.times) == 1
