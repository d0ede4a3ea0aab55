"""The worker loop: claim conversations from the queue and process them, a bounded number at
once; on stop, finish what is running within a grace period and hand back the rest.

While the filer of the same process has a backlog (a burst of webhooks not yet filed into
messages), the worker starts no turn past a quarter of its concurrency. A turn answers every
message of its conversation filed when it starts, so turns that start while most of a burst
is still unfiled answer one message each, and turns and filing share the process's one event
loop and its store's connections: with the worker's full concurrency, a burst of 20,000
webhooks from 1,000 customers was filed no faster than it was answered, one message per turn
(18,925 turns), and not answered within five minutes. Giving way, it is filed first and
answered in far fewer, bigger turns.

While the webhook door of the same process is pressed (`InboxWriter.quiet` clear: webhooks
come in much faster than it commits them), it starts no turn while one runs: a turn
costs as much of the event loop as a few hundred acknowledgements, and the door comes first
(the filer waits for it too). One turn at a time still runs, so a door pressed for minutes
does not stop the answers.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from parley.queue.base import Queue
from parley.worker.process import ConversationProcessor

log = structlog.get_logger(__name__)
CLAIM_TIMEOUT = 0.5
GIVE_WAY_CHECK = 0.05
"""Seconds between looks at the turns running, while the worker gives way to filing or to the
door."""
DOOR_FIRST_TURNS = 1
"""Most turns at once while the door of the same process is pressed."""


class Worker:
    def __init__(
        self,
        *,
        queue: Queue,
        processor: ConversationProcessor,
        concurrency: int,
        filed: asyncio.Event | None = None,
    ) -> None:
        """
        Args:
            concurrency: most turns at once.
            filed: set while the filer has no backlog (`Filer.caught_up`); while it is clear,
                at most a quarter of `concurrency` turns run.
        """
        self._queue = queue
        self._processor = processor
        self._slots = asyncio.Semaphore(concurrency)
        self._filed = filed
        self._door_quiet: asyncio.Event | None = None
        self._while_filing = max(1, concurrency // 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_done = asyncio.Event()

    def give_way_to(self, quiet: asyncio.Event) -> None:
        """Run at most `DOOR_FIRST_TURNS` turns while `quiet` is clear (the door of the same
        process is pressed, `InboxWriter.quiet`)."""
        self._door_quiet = quiet

    async def run(self) -> None:
        log.info("worker.started")
        try:
            await self._claim_loop()
        finally:
            self._loop_done.set()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            await self._give_way()
            try:
                conversation_id = await self._queue.claim(timeout=CLAIM_TIMEOUT)
            except Exception:
                self._slots.release()
                log.exception("worker.claim_failed")
                await asyncio.sleep(1)
                continue
            if conversation_id is None:
                self._slots.release()
                continue
            if self._stopping.is_set():  # claimed while stopping: hand it straight back
                await self._queue.release(conversation_id)
                self._slots.release()
                break
            task = asyncio.create_task(self._handle(conversation_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _give_way(self) -> None:
        """Wait while the turns running fill what the door and the filer leave them."""
        while not self._stopping.is_set():
            door, filed = self._door_quiet, self._filed
            if door is not None and not door.is_set():
                room, until = DOOR_FIRST_TURNS, door
            elif filed is not None and not filed.is_set():
                room, until = self._while_filing, filed
            else:
                return
            if len(self._tasks) < room:
                return
            # Bounded, so that a turn ending (room under the limit) is seen soon.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), timeout=GIVE_WAY_CHECK)

    async def _handle(self, conversation_id: int) -> None:
        try:
            await self._processor.process(conversation_id)
        except asyncio.CancelledError:
            # Shutdown: the messages stay `received` and are answered after the next start.
            log.warning("worker.turn_handed_back", conversation_id=conversation_id)
            raise
        except Exception:
            # The messages stay `received`; the reconciler signals the conversation again.
            log.exception("worker.turn_crashed", conversation_id=conversation_id)
        finally:
            await self._queue.release(conversation_id)
            self._slots.release()

    async def stop(self, grace: float) -> None:
        """Stop claiming; give running turns `grace` seconds, then cancel them."""
        self._stopping.set()
        # The claim loop notices within one claim timeout; waiting for it means no turn can
        # start after this returns.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop_done.wait(), timeout=CLAIM_TIMEOUT * 4)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("worker.stopped")
