"""Events for tests that must know when the code under test has started waiting."""

from __future__ import annotations

import asyncio


class WatchedEvent(asyncio.Event):
    """An event that says when someone waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> bool:  # type: ignore[override]
        self.waited.set()
        return await super().wait()
