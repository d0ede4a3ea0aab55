"""The process's cache of prompt bindings: a binding is read again after `BINDING_TTL_S`, and
at once when this process commits a binding change."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from parley.store.queries import prompt_cache
from parley.store.queries.prompts import BINDING_CHANGES


async def test_a_binding_is_read_again_after_its_ttl_or_a_committed_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[tuple[int, str | None]] = []

    async def binding_for(_session: Any, *, account_id: int, profile: str | None) -> Any:
        reads.append((account_id, profile))
        return f"binding {len(reads)}"

    monkeypatch.setattr(prompt_cache, "binding_for", binding_for)
    now = [50.0]
    cache = prompt_cache.PromptCache(ttl=1.0, clock=lambda: now[0])
    session: Any = None

    first = await cache.binding_for(session, account_id=1, profile="default")
    assert await cache.binding_for(session, account_id=1, profile="default") == first
    assert await cache.binding_for(session, account_id=1, profile="sales") != first
    assert len(reads) == 2

    now[0] += 1.0  # another process's change is seen within the TTL
    assert await cache.binding_for(session, account_id=1, profile="default") == "binding 3"

    changed = Session()
    BINDING_CHANGES.mark(changed)
    changed.dispatch.after_commit(changed)  # what committing `activate` does in this process
    assert await cache.binding_for(session, account_id=1, profile="default") == "binding 4"
    rolled_back = Session()
    BINDING_CHANGES.mark(rolled_back)
    rolled_back.dispatch.after_rollback(rolled_back)
    assert await cache.binding_for(session, account_id=1, profile="default") == "binding 4"
