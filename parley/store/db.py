"""One engine and sessionmaker per process, built in the app's lifespan and passed down."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import Connection, Engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.base import Executable

from parley.config import async_database_url
from parley.store import sqlite_driver
from parley.store.pool import FairAsyncQueuePool


def create_engine(
    url: str, *, pool_size: int = 20, durable: bool = False, ahead_of: AsyncEngine | None = None
) -> AsyncEngine:
    """An async engine tuned for its backend.

    Both hide their statements' parameters from error messages (`hide_parameters`): they
    hold customers' texts and numbers, and an error's text ends up in the logs.

    SQLite gets WAL (readers never wait on the writer), a busy timeout so concurrent writers
    queue instead of failing, and foreign keys on. PostgreSQL gets a pool of `pool_size`
    connections per process (see `_server_engine` for its prepared statements and pings).
    The pool has no overflow: SQLAlchemy closes an
    overflow connection when it is returned, so a steady load past the pool's size (a worker's
    turns) opened a new connection, a new PostgreSQL backend, for most transactions, and the
    worker drained a backlog more slowly than with fewer turns at once. Past the pool, a
    transaction waits its turn for a connection (`pool_timeout`), in the order it came
    (`store.pool.FairAsyncQueuePool`).

    SQLite only: `ahead_of` makes this a priority writer of `ahead_of`'s file, a second
    connection whose commits (see `priority_commit`) go in before `ahead_of`'s next write,
    and `durable` syncs each of its commits to disk (synchronous=FULL), which also makes
    durable whatever was committed before it. The inbox writer is one: an acknowledgement
    then waits for at most the writes of the shared connection already under way, not for
    every transaction queued for it, and never for its reads.
    """
    url = async_database_url(url)
    if url.startswith("sqlite"):
        # One SQLite connection, so that transactions queue in the process (a fair asyncio
        # wait) rather than in SQLite's busy handler, which sleeps up to 100 ms between tries
        # and made webhook acknowledgements take seconds under load. One process owns the
        # file, and no transaction is held across a network call, so the queue stays short.
        # The pool is that one connection, which also keeps the channels' background work
        # (filing, turns, delivery) to one transaction at a time: let run side by side, it
        # took the event loop from the webhooks' acknowledgements (`bench/ingest.py`, p50
        # 3 → 5-8 ms at 500/s). `create_shared_engine` adds views of it for `/v1`.
        engine = _sqlite_engine(
            _one_trip(url), pool_size=1, pragmas=_sqlite_pragmas_durable if durable else None
        )
        if ahead_of is not None:
            _AHEAD[engine.sync_engine] = ahead_of.sync_engine
        return engine
    return _server_engine(url, pool_size=pool_size, max_overflow=0)


_AHEAD: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()
"""A priority writer's engine → the engine whose connection it goes ahead of."""
_PRIORITY_PATIENCE = 5.0
"""The longest a priority writer waits for the shared connection's writes under way; only
a stuck transaction makes it matter, and then SQLite's busy handler makes them take turns."""


def create_shared_engine(engine: AsyncEngine, *, pool_size: int) -> AsyncEngine:
    """On SQLite's one-trip driver, an engine whose pool is `pool_size` views of `engine`'s
    connection (see `sqlite_driver`): a transaction sent whole in one trip waits for no
    other's answer, and one of several trips holds the connection from its first trip to
    its last. `/v1` takes its sessions from it: each request is two such transactions, and
    through one pooled connection each waited for the pool to hand it over and then held it
    for its trip's answer, two passes of a busy event loop for well under 0.1 ms of SQLite
    (`bench/responses.py`, about +50 % requests/s with the views). Elsewhere (PostgreSQL,
    another SQLite driver) `engine` itself."""
    dbapi = engine.sync_engine.dialect.dbapi
    if not isinstance(dbapi, sqlite_driver.OneTripDBAPI):
        return engine
    return _sqlite_engine(
        engine.url, pool_size=pool_size, module=sqlite_driver.OneTripDBAPI(shares=dbapi)
    )


def _sqlite_engine(
    url: Any, *, pool_size: int, pragmas: Any = None, module: Any = None
) -> AsyncEngine:
    """An SQLite engine: each connection set up by `pragmas` (WAL, foreign keys…) and each
    transaction opened as a writer (`_sqlite_begin_immediate`); a statement waits for the
    shared connection at most `sqlite_driver.LINE_TIMEOUT`."""
    options: dict[str, Any] = {} if module is None else {"module": module}
    engine = create_async_engine(
        url,
        connect_args={"timeout": 30},
        poolclass=FairAsyncQueuePool,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=sqlite_driver.LINE_TIMEOUT,
        hide_parameters=True,
        json_serializer=json_text,
        json_deserializer=json_value,
        **options,
    )
    event.listen(engine.sync_engine, "connect", pragmas or _sqlite_pragmas)
    event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine


def _one_trip(url: str) -> Any:
    """`sqlite+aiosqlite` URLs on the dialect that makes each statement one trip to SQLite's
    thread (`sqlite_driver`); any other driver named in the URL is kept."""
    parsed = make_url(url)
    if parsed.drivername != "sqlite+aiosqlite" or not sqlite_driver.AVAILABLE:
        return parsed
    return parsed.set(drivername=f"sqlite+{sqlite_driver.DRIVER}")


def create_send_record_engine(url: str, *, connections: int) -> AsyncEngine | None:
    """PostgreSQL only: `connections` connections in autocommit mode, for delivery to take
    one before each send and record the send on it right after the channel's answer.

    A pool of its own, so that sends in flight (each holding a connection for at most the
    send's timeout) never take connections from turns, and a send's record never waits for
    one. Autocommit, so that the record (one statement) is one round trip, and a connection
    held across the call is not idle in a transaction (PgBouncer in transaction mode gives
    its server connection back meanwhile). None for SQLite, whose one connection must never
    be held across a network call.
    """
    url = async_database_url(url)
    if url.startswith("sqlite"):
        return None
    return _server_engine(url, pool_size=connections, max_overflow=0, isolation_level="AUTOCOMMIT")


def create_inbox_engine(url: str) -> AsyncEngine | None:
    """PostgreSQL only: the inbox writer's own connection, in autocommit mode.

    A batch of webhooks is one INSERT of many rows (`VALUES (…), (…)`, up to 200), which
    PostgreSQL runs as one implicit transaction, all rows or none, in one round trip, where
    BEGIN, the INSERT and COMMIT took three. The writer holds the connection while webhooks
    keep coming (`InboxWriter`, `append_held`). Its own pool, so that acknowledgements never
    wait behind the `/v1` turns' transactions for a connection.
    None for SQLite, whose writer is a priority connection (`create_engine(ahead_of=…)`)."""
    url = async_database_url(url)
    if url.startswith("sqlite"):
        return None
    return _server_engine(url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")


def create_probe_engine(url: str) -> AsyncEngine | None:
    """PostgreSQL only: one connection of its own for `/readyz`'s database check.

    Through the shared pool, the check waited behind every turn's and delivery's
    transactions: with the pool busy (a burst, a slow disk) it timed out and a reachable
    database was reported down, which takes a busy process out of its load balancer, the
    opposite of what the burst needs. Opened on the first check, autocommit (the check is one
    statement). None for SQLite: its one connection is never held across a network call, so
    the check's wait for it is short.
    """
    url = async_database_url(url)
    if url.startswith("sqlite"):
        return None
    return _server_engine(url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")


def _server_engine(url: str, *, pool_size: int, max_overflow: int, **options: Any) -> AsyncEngine:
    """An engine on a database server (PostgreSQL): checked connections, bounded waits, and
    errors that never quote a statement's parameters (customer text).

    asyncpg keeps each connection's prepared statements (its default cache of 100), so that a
    statement run again is one round trip, not a Parse and then the statement. With that and
    the ping below, a transaction of three statements is five round trips where it was eleven,
    and costs the process about a third less CPU (`bench/pg_pool.py`). A pooler in transaction
    mode must then carry prepared statements across its server connections (PgBouncer 1.21
    or later with `max_prepared_statements` set); behind one that cannot, add
    `?prepared_statement_cache_size=0` to DATABASE_URL and Parley prepares nothing.
    """
    connect_args: dict[str, Any] = {}
    if "+asyncpg" in url:
        connect_args = {"command_timeout": 30}
        if make_url(url).query.get("prepared_statement_cache_size") == "0":
            connect_args["statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        poolclass=FairAsyncQueuePool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=30,
        connect_args=connect_args,
        hide_parameters=True,
        json_serializer=json_text,
        json_deserializer=json_value,
        **options,
    )
    _ping_after_idle(engine)
    return engine


IDLE_BEFORE_PING = 0.5
"""Seconds a pooled connection may rest and still be handed out unchecked (HikariCP's
`aliveBypassWindowMs` does the same). SQLAlchemy's `pool_pre_ping` checks every checkout,
and on asyncpg a check is three round trips (BEGIN, a statement, ROLLBACK), spent under load
on connections that came back to the pool milliseconds before. A connection the server
dropped while it rested is still caught before use; one dropped in the middle of a use fails
that use, which SQLAlchemy sees as a disconnect and then replaces every connection the pool
held (as with `pool_pre_ping`)."""
_RESTING_SINCE = "parley_resting_since"


def _ping_after_idle(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def checkin(_dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_RESTING_SINCE] = time.monotonic()

    def checkout(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        since = record.info.get(_RESTING_SINCE)
        if since is None or time.monotonic() - since < IDLE_BEFORE_PING:
            return  # new, or back in the pool moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool drops this connection and hands out another (or a new one).
            raise DisconnectionError("a pooled connection did not answer its ping") from error

    event.listen(pool, "checkin", checkin)
    event.listen(pool, "checkout", checkout)


def json_text(value: Any) -> str:
    """A JSON column's text, by orjson: SQLAlchemy's default is `json.dumps`, several times
    slower, and a `/v1` response writes about 17 of them. What orjson refuses (an integer
    beyond 64 bits, a string with a lone surrogate, a key that is not a string) goes through
    `json.dumps`, as it always did."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value)


def json_value(text: str | bytes) -> Any:
    """A JSON column's value, by orjson; what it refuses (`NaN`, which `json.dumps` writes
    for a float that is not a number) by `json.loads`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@contextlib.asynccontextmanager
async def priority_commit(engine: AsyncEngine) -> AsyncIterator[None]:
    """Around a priority writer's transactions: the shared connection queues no write until
    they are done, and they begin once its writes under way are done
    (`sqlite_driver._Line.prioritised`). A no-op for an engine that is not a priority writer
    of the one-trip driver (PostgreSQL)."""
    shared = _AHEAD.get(engine.sync_engine)
    line = None if shared is None else _line_of(shared)
    if line is None:
        yield
        return
    async with line.prioritised(_PRIORITY_PATIENCE):
        yield


def priority_pending(engine: AsyncEngine) -> bool:
    """Whether a priority writer of `engine`'s file has transactions to send: then a
    transaction of `engine` that can end early (the filer's batch) should, since the
    priority writer waits for it to end. Always False for an engine without one (PostgreSQL)."""
    line = _line_of(engine.sync_engine)
    return line is not None and line.priority > 0


def _line_of(engine: Engine) -> sqlite_driver._Line | None:
    """The shared SQLite connection under `engine`'s pool, once opened; None on other
    drivers."""
    dbapi = engine.dialect.dbapi
    return dbapi.line if isinstance(dbapi, sqlite_driver.OneTripDBAPI) else None


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    _sqlite_setup(dbapi_connection, "NORMAL")


def _sqlite_pragmas_durable(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    _sqlite_setup(dbapi_connection, "FULL")


def _sqlite_setup(dbapi_connection: DBAPIConnection, synchronous: str) -> None:
    if isinstance(dbapi_connection, sqlite_driver.OneTripConnection) and not (
        dbapi_connection.opened_line
    ):
        return  # another view of a connection that was set up when it opened
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


def _sqlite_begin_immediate(connection: Connection) -> None:
    driver = connection.connection.dbapi_connection
    if isinstance(driver, sqlite_driver.OneTripConnection):
        # Not a statement of its own: executed, it went through SQLAlchemy's whole
        # execution path (~80 calls, every transaction) only to be held back by the driver.
        driver.begin_with_next_statement()
    else:
        connection.exec_driver_sql(sqlite_driver.BEGIN)


def _one_trip_driver(connection: AsyncConnection) -> sqlite_driver.OneTripConnection | None:
    """`connection`'s one-trip SQLite driver connection; None on other drivers."""
    driver = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    return driver if isinstance(driver, sqlite_driver.OneTripConnection) else None


def holds_statements(connection: AsyncConnection) -> bool:
    """Whether `connection` holds a statement back for a later trip when told to
    (`defers_next_statement`): SQLite's one-trip driver does; other drivers run each at once."""
    return _one_trip_driver(connection) is not None


def ends_with_next_statement(connection: AsyncConnection) -> None:
    """`connection`'s next statement is its transaction's last, and the caller commits right
    after it: on SQLite the COMMIT goes to the database's thread in that statement's trip
    rather than in a trip of its own (a trip that waits its turn on a busy event loop while the
    process's one connection is held). Nothing changes on other drivers."""
    driver = _one_trip_driver(connection)
    if driver is not None:
        driver.commit_with_next_statement()


def defers_next_statement(connection: AsyncConnection) -> bool:
    """Nobody reads the outcome of `connection`'s next statement (no RETURNING, its rowcount
    unread): on SQLite it goes to the database's thread in the trip of the statement after it,
    or of the COMMIT, rather than in a trip of its own; an error it raises is raised there.
    Nothing changes on other drivers. Returns whether the statement will be held back."""
    driver = _one_trip_driver(connection)
    if driver is not None:
        driver.defer_next_statement()
    return driver is not None


async def execute_guarded(
    connection: AsyncConnection,
    statement: Executable,
    parameters: dict[str, Any],
    *,
    expect: int,
    refusal: sqlite_driver.Refusal,
    hold: bool = True,
) -> None:
    """Execute `statement`, which must change `expect` rows; if it changes another number,
    `refusal(rowcount)` is raised and nothing of the transaction is kept.

    On SQLite (with `hold`) it goes to the database's thread in the trip of the transaction's
    next statement or COMMIT (see `defers_next_statement`), where the guard is checked before
    anything after it runs: that trip rolls the transaction back and raises the refusal, so a
    transaction whose outcome depends on the statement still takes no trip of its own for it.
    Without `hold` it runs at once, and on SQLite a COMMIT it carries is not made if it
    refuses. Elsewhere it runs at once and the refusal is raised from here; the caller's
    transaction is then rolled back as after any error."""
    driver = _one_trip_driver(connection)
    if driver is not None:
        driver.guard_next_statement(expect, refusal)
        if hold:
            driver.defer_next_statement()
        await connection.execute(statement, parameters)
        return
    result = await connection.execute(statement, parameters)
    if result.rowcount != expect:  # type: ignore[attr-defined]
        raise refusal(result.rowcount)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that only reads. On SQLite its SELECTs run outside a transaction, each a
    consistent read of its own: no BEGIN IMMEDIATE holding the write lock while it reads, and
    no trip to the database's thread for the ROLLBACK that ends it; a write in it is refused
    (`sqlite_driver.WriteWhileReading`). On other drivers, an ordinary session."""
    async with sessions() as session:
        driver = _one_trip_driver(await session.connection())
        if driver is not None:
            driver.read_only()
        yield session


async def last_statement_of(session: AsyncSession) -> AsyncConnection:
    """`session`'s connection, its next statement the transaction's last (see
    `ends_with_next_statement`). What the ORM still holds is written first, so that the
    commit that follows has nothing left to write after the committed statement."""
    await session.flush()
    connection = await session.connection()
    ends_with_next_statement(connection)
    return connection


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
