"""One engine and sessionmaker per process, built in the app's lifespan and passed down."""

from __future__ import annotations

import asyncio
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

# SQLite's write lock, taken in this process before SQLite's own: see `_gate`.
_GATES: WeakKeyDictionary[Engine, asyncio.Lock] = WeakKeyDictionary()


def create_engine(
    url: str, *, pool_size: int = 10, durable: bool = False, share_gate: AsyncEngine | None = None
) -> AsyncEngine:
    """An async engine tuned for its backend.

    SQLite gets WAL (readers never wait on the writer), a busy timeout so concurrent writers
    queue instead of failing, and foreign keys on. PostgreSQL gets a small pool per process
    and no server-side prepared-statement cache, so it also works behind PgBouncer in
    transaction mode.

    `durable` (SQLite): every commit is synced to disk (synchronous=FULL), for the inbox's
    group commits, which acknowledge webhooks; one sync per batch, and it also makes durable
    whatever other connections committed before it in the WAL. `share_gate`: the engine whose
    write gate this one shares (the inbox writer shares the main engine's).
    """
    if url.startswith("sqlite"):
        # One connection, so that transactions queue in the pool (a fair asyncio wait) rather
        # than in SQLite's busy handler, which sleeps up to 100 ms between tries. One process
        # owns the file, and no transaction is held across a network call, so the queue stays
        # short. The inbox writer (`durable`) is the one other connection: its transactions
        # are a single insert, so the busy handler's wait on either side stays short.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )
        pragmas = _sqlite_pragmas_durable if durable else _sqlite_pragmas
        event.listen(engine.sync_engine, "connect", pragmas)
        gate = _GATES[share_gate.sync_engine] if share_gate is not None else asyncio.Lock()
        _gate(engine.sync_engine, gate)
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
    _sqlite_setup(dbapi_connection, "NORMAL")


def _sqlite_pragmas_durable(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    _sqlite_setup(dbapi_connection, "FULL")


def _sqlite_setup(dbapi_connection: DBAPIConnection, synchronous: str) -> None:
    # Take transaction control from the driver so that `_sqlite_begin_immediate` can open
    # every transaction as a writer: a deferred transaction that reads and then writes fails
    # with "database is locked" when another writer got in between, whatever the timeout.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _gate(engine: Engine, gate: asyncio.Lock) -> None:
    """Writers of one file take turns on an asyncio lock before BEGIN IMMEDIATE.

    Two connections write the file (the shared one and the inbox writer's). Left to SQLite's
    busy handler, the waiting side sleeps 1, 2, 5… up to 100 ms between tries and, against a
    connection that starts its next transaction the moment the last one commits, can starve
    for seconds. The lock is fair (FIFO) and each engine has at most one transaction waiting
    for it, so each side waits for at most one transaction of the other.
    """
    _GATES[engine] = gate

    def begin(connection: Connection) -> None:
        await_only(gate.acquire())  # runs in SQLAlchemy's greenlet: an awaitable is fine
        connection.info["gate"] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection.info)
            raise

    def end(connection: Connection) -> None:
        _release(connection.info)

    def checkin(_dbapi: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        _release(record.info)  # a connection returned mid-transaction (a cancelled task)

    def _release(info: dict[Any, Any]) -> None:
        if info.pop("gate", False):
            gate.release()

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
    event.listen(engine, "checkin", checkin)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
