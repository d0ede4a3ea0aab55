"""The worker loop: claim conversations from the queue and process them, a bounded number at
once; on stop, finish what is running within a grace period and hand back the rest."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from parley.queue.base import Queue
from parley.worker.process import ConversationProcessor

log = structlog.get_logger(__name__)
CLAIM_TIMEOUT = 0.5


class Worker:
    def __init__(self, *, queue: Queue, processor: ConversationProcessor, concurrency: int) -> None:
        self._queue = queue
        self._processor = processor
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_done = asyncio.Event()

    async def run(self) -> None:
        log.info("worker.started")
        try:
            await self._claim_loop()
        finally:
            self._loop_done.set()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
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
