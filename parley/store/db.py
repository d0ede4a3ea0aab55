"""One engine and sessionmaker per process, built in the app's lifespan and passed down."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine tuned for its backend.

    SQLite gets WAL (readers never wait on the writer), a busy timeout so concurrent writers
    queue instead of failing, and foreign keys on. PostgreSQL gets a small pool per process
    and no server-side prepared-statement cache, so it also works behind PgBouncer in
    transaction mode.
    """
    if url.startswith("sqlite"):
        # One connection, so that transactions queue in the pool (a fair asyncio wait) rather
        # than in SQLite's busy handler, which sleeps up to 100 ms between tries and made
        # webhook acknowledgements take seconds under load. One process owns the file, and
        # no transaction is held across a network call, so the queue stays short.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    connect_args: dict[str, Any] = {}
    if "+asyncpg" in url:
        connect_args = {"statement_cache_size": 0, "command_timeout": 30}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=30,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Take transaction control from the driver so that `_sqlite_begin_immediate` can open
    # every transaction as a writer: a deferred transaction that reads and then writes fails
    # with "database is locked" when another writer got in between, whatever the timeout.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
