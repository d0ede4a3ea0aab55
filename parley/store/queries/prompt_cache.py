"""What answers a conversation, remembered by a process for a turn's hot path.

A binding (which prompt version answers an account or profile) is kept for `BINDING_TTL_S`
and dropped at once when this process commits a binding change (`BINDING_CHANGES`); a change
made by another process (`parley prompts activate`, another API process) reaches new turns
within `BINDING_TTL_S` and one read. Once a binding is older than that, one turn reads it again
and the turns meanwhile keep the one it replaces: when every turn in flight read it (they all
found it expired at once), a busy process read each binding ~5 times a second, not once. A
prompt version never changes once written, so it is kept as read.

What is remembered outlives the session that read it, so it is taken out of that session
(`_kept`): a session that later rolls back expires every row it holds, and a row expired after
its session closed can never be read again (each later turn would fail on it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import PromptBinding, PromptVersion
from parley.store.queries.prompts import BINDING_CHANGES, binding_for, version_named

BINDING_TTL_S = 1.0
MAX_ENTRIES = 10_000
K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


class PromptCache:
    def __init__(
        self, ttl: float = BINDING_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._bindings: dict[tuple[int, str | None], tuple[float, int, PromptBinding | None]] = {}
        self._versions: dict[int, tuple[str, PromptVersion]] = {}
        self._reading: set[tuple[int, str | None]] = set()

    async def binding_for(
        self, session: AsyncSession, *, account_id: int, profile: str | None
    ) -> PromptBinding | None:
        key = (account_id, profile)
        generation = BINDING_CHANGES.generation()
        entry = self._bindings.get(key)
        if entry is not None and entry[1] == generation:
            at, _, binding = entry
            if key in self._reading or self._clock() - at < self._ttl:
                return binding
        # Not waiting for another turn's read: it runs in that turn's transaction, which on
        # SQLite holds the connection this turn's own transaction may hold too.
        self._reading.add(key)
        try:
            at = self._clock()
            found = await binding_for(session, account_id=account_id, profile=profile)
        finally:
            self._reading.discard(key)
        binding = _kept(session, found)
        if generation == BINDING_CHANGES.generation():
            _bounded(self._bindings)[key] = (at, generation, binding)
        return binding

    async def version_named(
        self, session: AsyncSession, *, version_id: int
    ) -> tuple[str, PromptVersion]:
        found = self._versions.get(version_id)
        if found is None:
            name, version = await version_named(session, version_id=version_id)
            found = name, _kept(session, version)
            _bounded(self._versions)[version_id] = found
        return found


def _kept(session: AsyncSession, row: R) -> R:
    """`row`, loaded, and no longer in `session` (anything but a row is kept as it is)."""
    if isinstance(row, PromptBinding | PromptVersion) and row in session:
        session.expunge(row)
    return row


def _bounded(entries: dict[K, V]) -> dict[K, V]:
    if len(entries) >= MAX_ENTRIES:
        entries.clear()
    return entries
