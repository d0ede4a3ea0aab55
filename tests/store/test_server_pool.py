"""PostgreSQL's pool: prepared statements kept per connection (or none, for a pooler that
cannot carry them), and a connection that rested checked before use, one in use not."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import db
from parley.store.db import create_engine
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize(
    "backend", [b for b in BACKENDS if b == "postgres"], indirect=True
)

PREPARED = text("SELECT statement FROM pg_prepared_statements")
PROBE = text("SELECT :n + 1")


async def prepared(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        await connection.execute(PROBE, {"n": 1})
        return [row[0] for row in await connection.execute(PREPARED)]


async def test_statements_are_prepared_once_per_connection_unless_the_url_says_not(
    database_url: str,
) -> None:
    cached = create_engine(database_url)
    plain = create_engine(
        make_url(database_url)
        .update_query_dict({"prepared_statement_cache_size": "0"})
        .render_as_string(hide_password=False)
    )
    try:
        assert "SELECT $1 + 1" in await prepared(cached)
        assert await prepared(plain) == []  # nothing a transaction-mode pooler would lose
    finally:
        await cached.dispose()
        await plain.dispose()


async def test_a_connection_dropped_while_resting_is_replaced_before_use(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url)
    pings: list[object] = []
    ping = engine.sync_engine.dialect.do_ping
    monkeypatch.setattr(engine.sync_engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", 60.0)  # nothing rests that long here
    backend_pid = text("SELECT pg_backend_pid()")
    try:
        async with engine.connect() as connection:
            first = (await connection.execute(backend_pid)).scalar()
        async with engine.connect() as connection:  # back at once: not pinged
            assert (await connection.execute(backend_pid)).scalar() == first
        assert pings == []

        killer = create_engine(database_url)  # the server drops the resting connection
        try:
            async with killer.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        finally:
            await killer.dispose()
        # As if it had rested past the threshold: the next checkout pings it.
        monkeypatch.setattr(db, "IDLE_BEFORE_PING", 0.0)
        async with engine.connect() as connection:
            replaced = (await connection.execute(backend_pid)).scalar()
        assert len(pings) == 1
        assert replaced != first
    finally:
        await engine.dispose()
