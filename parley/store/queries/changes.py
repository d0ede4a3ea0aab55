"""Committed changes a process's caches must not outlive: a counter per kind of change, bumped
when a transaction that made such a change commits in this process.

A cache remembers the counter's value from before its lookup, and drops an entry once the
counter has moved on. Changes committed by another process are not counted here: caches that
depend on this bound their entries' age as well (see `api.auth`, `responses.service`).
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session


class ChangeCounter:
    def __init__(self, name: str) -> None:
        self._key = f"parley.changed.{name}"
        self._generation = 0
        event.listen(Session, "after_commit", self._committed)
        event.listen(Session, "after_rollback", self._rolled_back)

    def mark(self, session: AsyncSession | Session) -> None:
        """The session's transaction makes such a change: counted when it commits."""
        session.info[self._key] = True

    def generation(self) -> int:
        return self._generation

    def _committed(self, session: Session) -> None:
        # Counted once committed, not when flushed: a lookup racing the transaction would
        # otherwise cache the old answer under the new number.
        if session.info.pop(self._key, False):
            self._generation += 1

    def _rolled_back(self, session: Session) -> None:
        session.info.pop(self._key, None)
