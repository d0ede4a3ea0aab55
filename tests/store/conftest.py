"""Fixtures for the store's queries, run against a migrated database of either backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.db import create_engine, create_sessionmaker
from parley.store.direct import DirectWrites
from parley.store.migrate import upgrade


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a freshly migrated store (the test's backend)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session on a freshly migrated store (the test's backend)."""
    async with sessions() as session:
        yield session


@pytest.fixture(params=["session", "direct"])
def direct(
    request: pytest.FixtureRequest, session: AsyncSession, backend: str
) -> DirectWrites | None:
    """Each test twice on SQLite: None (the queries' session path), then the engine's line
    for their direct path (`store.direct`); on PostgreSQL, None both times."""
    if request.param == "session" or backend == "postgres":
        return None
    direct = DirectWrites.of(session.bind)  # type: ignore[arg-type]
    assert direct is not None
    return direct


@pytest.fixture(params=["session", "direct"])
def outcomes(request: pytest.FixtureRequest, session: AsyncSession) -> DirectWrites | None:
    """As `direct`, for the queries of turns and sends, which go without a session on
    PostgreSQL too: None (their session path), then SQLite's line or asyncpg's own API
    (`DirectWrites.on_postgresql`)."""
    if request.param == "session":
        return None
    engine = session.bind
    found = DirectWrites.of(engine) or DirectWrites.on_postgresql(engine)  # type: ignore[arg-type]
    assert found is not None
    return found


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each trip to SQLite's thread (a statement, a commit…), by the function it ran."""
    sent: list[str] = []
    execute = aiosqlite.Connection._execute

    def counted(self: aiosqlite.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(function, "__name__", repr(function)))
        return execute(self, function, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return sent
