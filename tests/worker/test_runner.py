"""The worker loop gives way to filing: while the filer has a backlog, at most a quarter of its
concurrency runs, so that a burst is filed before it is answered (in fewer, bigger turns). And
to the door: while the door of the same process is pressed, one turn at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from parley.queue.memory import MemoryQueue
from parley.worker.runner import Worker
from tests.events import WatchedEvent


class HeldTurns:
    """A processor whose turns run until released, recording which started."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def process(self, conversation_id: int) -> None:
        async with self.changed:
            self.started.append(conversation_id)
            self.changed.notify_all()
        await self.release.wait()

    async def until_started(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.started) >= count), timeout=5
            )


@contextlib.asynccontextmanager
async def running(worker: Worker, queue: MemoryQueue, turns: HeldTurns) -> AsyncIterator[None]:
    """The worker running with ten conversations signalled; on the way out every turn is let
    go and the worker stopped."""
    await queue.signal_many(range(1, 11))
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        turns.release.set()
        await worker.stop(grace=5)
        await asyncio.wait_for(task, timeout=5)


async def test_a_quarter_of_the_turns_run_while_the_filer_is_behind() -> None:
    queue = MemoryQueue()
    turns = HeldTurns()
    filed = WatchedEvent()  # clear: the filer has a backlog
    worker = Worker(queue=queue, processor=turns, concurrency=8, filed=filed)  # type: ignore[arg-type]
    async with running(worker, queue, turns):
        await turns.until_started(2)
        # The worker waits for the filer with two turns running: none started past them.
        await asyncio.wait_for(filed.waited.wait(), timeout=5)
        assert turns.started == [1, 2]

        filed.set()  # caught up: the full concurrency, and no more
        await turns.until_started(8)
        filed.waited.clear()
        filed.clear()  # behind again, with eight running: no slot is free anyway
        turns.release.set()  # the eight end; two start while the filer is behind
        await turns.until_started(10)
        assert turns.started == list(range(1, 11))


async def test_one_turn_at_a_time_runs_while_the_door_is_pressed() -> None:
    queue = MemoryQueue()
    turns = HeldTurns()
    filed = WatchedEvent()  # the filer is behind as well: the door's limit is the lower one
    quiet = WatchedEvent()  # clear: the door is pressed
    worker = Worker(queue=queue, processor=turns, concurrency=8, filed=filed)  # type: ignore[arg-type]
    worker.give_way_to(quiet)
    async with running(worker, queue, turns):
        await turns.until_started(1)
        # The worker waits for the door with one turn running: none started past it.
        await asyncio.wait_for(quiet.waited.wait(), timeout=5)
        assert turns.started == [1]

        quiet.set()  # the door is quiet, the filer still behind: a quarter of eight
        await turns.until_started(2)
        await asyncio.wait_for(filed.waited.wait(), timeout=5)
        assert turns.started == [1, 2]

        filed.set()  # both: the full concurrency
        await turns.until_started(8)
        assert turns.started == list(range(1, 9))
