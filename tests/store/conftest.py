"""Fixtures for the store's queries, run against a migrated database of either backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on a freshly migrated store (the test's backend)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()
