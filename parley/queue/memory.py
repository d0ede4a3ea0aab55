"""The in-process queue of `parley serve`: one process, so holds live in memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable


class MemoryQueue:
    def __init__(self) -> None:
        self._ready: deque[int] = deque()
        self._queued: set[int] = set()
        self._held: set[int] = set()
        self._again: set[int] = set()
        self._changed = asyncio.Condition()

    async def signal(self, conversation_id: int) -> None:
        await self.signal_many([conversation_id])

    async def signal_many(self, conversation_ids: Iterable[int]) -> None:
        async with self._changed:
            for conversation_id in conversation_ids:
                if conversation_id in self._held:
                    # Answered after the running turn, so that turns never overlap.
                    self._again.add(conversation_id)
                elif conversation_id not in self._queued:
                    self._queued.add(conversation_id)
                    self._ready.append(conversation_id)
            self._changed.notify_all()

    async def claim(self, timeout: float) -> int | None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._ready)), timeout)
            except TimeoutError:
                return None
            conversation_id = self._ready.popleft()
            self._queued.discard(conversation_id)
            self._held.add(conversation_id)
            return conversation_id

    async def release(self, conversation_id: int) -> None:
        async with self._changed:
            self._held.discard(conversation_id)
            if conversation_id in self._again:
                self._again.discard(conversation_id)
                if conversation_id not in self._queued:
                    self._queued.add(conversation_id)
                    self._ready.append(conversation_id)
                self._changed.notify_all()

    async def ping(self) -> bool:
        return True

    async def depth(self) -> int:
        return len(self._ready)

    async def close(self) -> None:
        return None
