"""A background loop that does one round of work, then waits for a wake-up or for its poll
interval, whichever comes first.

The filer, delivery, handoff notices and upstream deletions all run so: work written by the
same process wakes its loop at once (`wake`), and the poll finds what another process wrote
(`parley api` queues work that `parley worker` does). Each loop keeps its own round, its own
interval and what it does after a failure; this is only the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Round = Callable[[], Awaitable[float]]
"""One round of work; returns the seconds the loop may then wait (0: more is waiting, go on)."""


class PollLoop:
    def __init__(
        self, work: Round, *, failed: str, retry: float, wake_during_retry: bool = True
    ) -> None:
        """
        Args:
            work: one round; what it raises is logged as `failed` (a round that fails is
                tried again, never the end of the loop).
            retry: seconds to wait after a failed round.
            wake_during_retry: whether a wake-up ends that wait early. A loop woken by every
                webhook does not want it: a store that is down would be asked again at each.
        """
        self._work = work
        self._failed = failed
        self._retry = retry
        self._wake_during_retry = wake_during_retry
        self._event = asyncio.Event()
        self._stopped = False

    def wake(self) -> None:
        """Work is waiting: start the next round now rather than at the next poll."""
        self._event.set()

    def stop(self) -> None:
        """End the loop after its current round (or at once, if it is waiting)."""
        self._stopped = True
        self._event.set()

    async def run(self) -> None:
        while not self._stopped:
            # Cleared before the round, so that a wake-up during it is not lost.
            self._event.clear()
            try:
                pause = await self._work()
            except Exception:
                log.exception(self._failed)
                if not self._wake_during_retry:
                    await asyncio.sleep(self._retry)
                    continue
                pause = self._retry
            if pause > 0 and not self._stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), timeout=pause)
