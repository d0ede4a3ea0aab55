"""The queue carries signals only: "conversation X has work". The database holds the work.

A signal may be lost (the reconciler repeats it) or doubled (the worker then finds nothing to
do), so no implementation needs to be durable, only exclusive: a conversation is held by one
worker at a time, which keeps its turns in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Queue(Protocol):
    async def signal(self, conversation_id: int) -> None:
        """Say that the conversation has work; a no-op if that is already known."""

    async def signal_many(self, conversation_ids: Iterable[int]) -> None: ...

    async def claim(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for a signalled conversation no one holds, and hold it.

        Returns:
            The conversation id, or None when none came in time.
        """

    async def release(self, conversation_id: int) -> None:
        """Let go of a held conversation; one signalled meanwhile is queued again."""

    async def ping(self) -> bool:
        """Whether the queue can take signals now (for /readyz)."""

    async def depth(self) -> int:
        """How many conversations wait to be claimed."""

    async def close(self) -> None: ...
