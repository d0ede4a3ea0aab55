"""The process's cache of prompt bindings: a binding is read again after `BINDING_TTL_S`, and
at once when this process commits a binding change; what it remembers stays readable whatever
becomes of the session that read it (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.queries import prompt_cache
from parley.store.queries.prompts import (
    BINDING_CHANGES,
    Target,
    VersionFields,
    activate,
    create_prompt,
)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


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


async def test_an_expired_binding_is_read_by_one_turn_while_the_others_keep_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[asyncio.Future[str]] = []

    async def binding_for(_session: Any, *, account_id: int, profile: str | None) -> Any:
        read: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reads.append(read)
        return await read

    monkeypatch.setattr(prompt_cache, "binding_for", binding_for)
    now = [50.0]
    cache = prompt_cache.PromptCache(ttl=1.0, clock=lambda: now[0])
    session: Any = None

    def turn() -> asyncio.Task[Any]:
        return asyncio.create_task(cache.binding_for(session, account_id=1, profile="default"))

    first = turn()
    await asyncio.sleep(0)
    reads[0].set_result("binding 1")
    assert await first == "binding 1"

    now[0] += 1.0
    reading = turn()
    await asyncio.sleep(0)
    assert len(reads) == 2  # one turn reads the expired binding again
    # Turns meanwhile are answered with the binding it replaces, and read nothing.
    async with asyncio.timeout(5):  # not waiting on a read of their own
        assert await asyncio.gather(turn(), turn()) == ["binding 1", "binding 1"]
    reads[1].set_result("binding 2")
    assert await reading == "binding 2"
    assert await turn() == "binding 2"
    assert len(reads) == 2

    # A read that fails leaves the next turn to read again.
    now[0] += 1.0
    failing = turn()
    await asyncio.sleep(0)
    reads[2].set_exception(RuntimeError("the store went away"))
    with pytest.raises(RuntimeError):
        await failing
    retry = turn()
    await asyncio.sleep(0)
    assert len(reads) == 4
    reads[3].set_result("binding 3")
    assert await retry == "binding 3"


async def test_what_is_remembered_outlives_a_rollback_of_the_session_that_read_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        first = VersionFields(instructions="You sell bikes.")
        version = await create_prompt(session, name="sales", description=None, first=first)
        await activate(session, target=Target(profile="sales"), version=version)
        await session.commit()
    cache = prompt_cache.PromptCache()
    async with sessions() as session:
        binding = await cache.binding_for(session, account_id=1, profile="sales")
        assert binding is not None
        await cache.version_named(session, version_id=binding.version_id)
        # As when a response's insert loses an Idempotency-Key race after choosing its prompt.
        await session.rollback()

    async with sessions() as session:
        remembered = await cache.binding_for(session, account_id=1, profile="sales")
        assert remembered is binding
        assert (remembered.version_id, remembered.candidate_version_id) == (version.id, None)
        name, read = await cache.version_named(session, version_id=version.id)
    assert (name, read.version, read.instructions) == ("sales", 1, "You sell bikes.")
