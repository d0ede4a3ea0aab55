"""The SQLite dialect that makes each statement one trip to aiosqlite's thread: results,
counts and errors as the stock adapter gives them, BEGIN IMMEDIATE's write lock taken by
the transaction's first statement, COMMIT sent with the last one when told, a statement
whose outcome is not read sent with the trip after it when told, and read-only sessions run
outside a transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.store import sqlite_driver
from parley.store.db import (
    create_engine,
    create_sessionmaker,
    create_shared_engine,
    defers_next_statement,
    ends_with_next_statement,
    execute_guarded,
    last_statement_of,
    priority_commit,
    priority_pending,
    reading,
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """Views of one connection, as `/v1`'s engine (`create_shared_engine`); the engine
    that opened the connection stays open beside it, as the channels' one does."""
    first = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    engine = create_shared_engine(first, pool_size=8)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield engine
    await engine.dispose()
    await first.dispose()


def _locked(path: Path) -> bool:
    """Whether another connection holds the file's write lock (a BEGIN IMMEDIATE that may
    not wait fails)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return True
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    return False


async def test_sqlite_urls_use_the_one_trip_dialect(engine: AsyncEngine) -> None:
    assert sqlite_driver.AVAILABLE
    assert engine.dialect.driver == sqlite_driver.DRIVER


async def test_rows_counts_and_ids_come_back_with_the_statement(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert inserted.lastrowid == 1
        await connection.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}, {"v": "d"}]
        )
        updated = await connection.execute(text("UPDATE t SET v = v || '!' WHERE id > 2"))
        assert updated.rowcount == 2
        returned = await connection.execute(text("INSERT INTO t (v) VALUES ('e') RETURNING id, v"))
        assert returned.all() == [(5, "e")]
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, v FROM t ORDER BY id"))
        assert list(rows.keys()) == ["id", "v"]
        assert rows.all() == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!"), (5, "e")]


async def test_an_error_rolls_the_transaction_back(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    async with engine.begin() as connection:  # the connection is usable, nothing was kept
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 0
        await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT v FROM t"))).all() == [("x",)]


async def test_the_first_statement_takes_the_write_lock(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        # Nothing run yet: the deferred BEGIN has not reached SQLite.
        assert not _locked(path)
        # A read first, as a read-then-write transaction does: the BEGIN IMMEDIATE sent
        # with it makes this transaction the file's writer from here on.
        await connection.execute(text("SELECT count(*) FROM t"))
        assert _locked(path)
    assert not _locked(path)


def _visible(path: Path) -> list[str]:
    """What another connection reads: only what is committed."""
    other = sqlite3.connect(path)
    try:
        return [v for (v,) in other.execute("SELECT v FROM t ORDER BY id")]
    finally:
        other.close()


async def test_the_last_statement_carries_the_commit(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        ends_with_next_statement(connection)
        returned = await connection.execute(text("INSERT INTO t (v) VALUES ('b') RETURNING v"))
        assert returned.all() == [("b",)]
        # Committed with it, before the commit below is even asked for.
        assert _visible(path) == ["a", "b"]
        assert not _locked(path)
    assert trips == ["run_trip", "run_trip"]  # BEGIN with the first, COMMIT with the second

    async with engine.begin() as connection:  # the next transaction is an ordinary one
        await connection.execute(text("INSERT INTO t (v) VALUES ('c')"))
        assert _visible(path) == ["a", "b"]
    assert _visible(path) == ["a", "b", "c"]
    assert trips[2:] == ["run_trip", "run_trip"]  # its statement, then its commit


async def test_a_statement_after_the_committing_one_is_refused(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    with pytest.raises(ProgrammingError, match="committed with its last statement"):
        async with engine.begin() as connection:
            ends_with_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await connection.execute(text("INSERT INTO t (v) VALUES ('b')"))
    assert _visible(tmp_path / "driver.db") == ["a"]  # what came before it stands
    async with engine.begin() as connection:  # and the connection is usable
        await connection.execute(text("INSERT INTO t (v) VALUES ('c')"))
    assert _visible(tmp_path / "driver.db") == ["a", "c"]


async def test_a_failed_last_statement_commits_nothing_and_leaves_no_commit_behind(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('y')"))
            ends_with_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    assert _visible(path) == ["x"]
    # Told, but no statement came: the commit is an ordinary one.
    async with engine.begin() as connection:
        ends_with_next_statement(connection)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('z')"))
        assert _visible(path) == ["x"]  # not committed early by a leftover
    assert _visible(path) == ["x", "z"]


async def test_a_held_back_statement_rides_with_the_next_trip(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        defers_next_statement(connection)
        held = await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert held.rowcount == -1  # not run yet: there is no outcome to read
        assert trips == [] and not _locked(path)  # nor its BEGIN
        # The next statement sees it: it ran first, in the same trip.
        counted = await connection.execute(text("SELECT count(*) FROM t"))
        assert counted.scalar() == 1
        assert trips == ["run_trip"]
        defers_next_statement(connection)
        await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}])
        assert _visible(path) == []
    # The commit carries the held-back statement: one trip for both.
    assert trips == ["run_trip", "run_trip"]
    assert _visible(path) == ["a", "b", "c"]


async def test_a_held_back_statement_goes_with_the_committing_one(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        defers_next_statement(connection)
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        ends_with_next_statement(connection)
        defers_next_statement(connection)  # the committing statement is never held back
        returned = await connection.execute(text("INSERT INTO t (v) VALUES ('b') RETURNING id"))
        assert returned.all() == [(2,)]
        assert _visible(path) == ["a", "b"]
    assert trips == ["run_trip"]  # BEGIN, both statements and COMMIT


class Refused(Exception):
    pass


def _refused(rowcount: int) -> Refused:
    return Refused(rowcount)


async def test_a_guarded_statement_rides_with_the_next_trip_and_is_checked_there(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"))
    trips.clear()
    async with engine.begin() as connection:
        update = text("UPDATE t SET v = v || '!' WHERE v IN ('a', 'b', 'z')")
        await execute_guarded(connection, update, {}, expect=2, refusal=_refused)
        assert trips == []
        counted = await connection.execute(text("SELECT count(*) FROM t WHERE v LIKE '%!'"))
        assert counted.scalar() == 2  # the held UPDATE ran first, in the same trip
        assert trips == ["run_trip"]
        # Held for the COMMIT: checked in the commit's trip.
        delete = text("DELETE FROM t WHERE v = 'c'")
        await execute_guarded(connection, delete, {}, expect=1, refusal=_refused)
    assert trips == ["run_trip", "run_trip"]
    assert _visible(path) == ["a!", "b!"]


async def test_a_refused_guard_stops_its_trip_and_keeps_nothing(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b')"))
    trips.clear()
    with pytest.raises(Refused) as raised:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
            update = text("UPDATE t SET v = 'z' WHERE v = 'nobody'")
            await execute_guarded(connection, update, {}, expect=1, refusal=_refused)
            defers_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('y')"))
            ends_with_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('w')"))
    assert raised.value.args == (0,)
    assert not _locked(path)  # rolled back on the thread: the write lock is let go at once
    assert _visible(path) == ["a", "b"]  # neither before nor after it, nor a COMMIT
    assert trips == ["run_trip", "run_trip"]  # the INSERT, then the trip that stopped; no ROLLBACK
    async with engine.begin() as connection:  # the connection is usable
        await connection.execute(text("INSERT INTO t (v) VALUES ('c')"))
    assert _visible(path) == ["a", "b", "c"]


async def test_a_guard_carrying_the_commit_or_run_at_once_is_checked_before_the_commit(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "driver.db"
    with pytest.raises(Refused):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            ends_with_next_statement(connection)
            update = text("UPDATE t SET v = 'z' WHERE v = 'nobody'")
            await execute_guarded(connection, update, {}, expect=1, refusal=_refused)
    assert _visible(path) == []
    with pytest.raises(Refused):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            ends_with_next_statement(connection)
            delete = text("DELETE FROM t WHERE v = 'nobody'")
            await execute_guarded(connection, delete, {}, expect=1, refusal=_refused, hold=False)
    assert _visible(path) == []
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        ends_with_next_statement(connection)
        update = text("UPDATE t SET v = 'A' WHERE v = 'a'")
        await execute_guarded(connection, update, {}, expect=1, refusal=_refused, hold=False)
    assert _visible(path) == ["A"]


async def test_a_held_back_statements_error_fails_its_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    with pytest.raises(IntegrityError) as raised:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES ('y')"))
            defers_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))  # a duplicate
    # Raised by the commit's trip, which names the statement that failed.
    assert any("INSERT INTO t (v) VALUES ('x')" in note for note in raised.value.orig.__notes__)
    assert _visible(path) == ["x"]
    async with engine.begin() as connection:  # the connection is usable, nothing was kept
        await connection.execute(text("INSERT INTO t (v) VALUES ('z')"))
    assert _visible(path) == ["x", "z"]


async def test_a_rollback_drops_held_back_statements_unsent(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.connect() as connection:
        await connection.begin()
        insert = text("INSERT INTO t (v) VALUES ('a')")
        await execute_guarded(connection, insert, {}, expect=1, refusal=_refused)
        await connection.rollback()
        assert trips == []  # neither the statement nor its transaction reached SQLite
        async with connection.begin():  # the next transaction does not run it either
            await connection.execute(text("INSERT INTO t (v) VALUES ('b')"))
    assert _visible(path) == ["b"]


async def test_a_reading_session_takes_no_lock_and_ends_without_a_trip(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    sessions = create_sessionmaker(engine)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
    trips.clear()
    async with reading(sessions) as session:
        assert (await session.execute(text("SELECT v FROM t"))).all() == [("a",)]
        assert not _locked(path)  # a writer elsewhere is not held up by this read
        # Each read sees what is committed when it runs.
        other = sqlite3.connect(path)
        other.execute("INSERT INTO t (v) VALUES ('b')")
        other.commit()
        other.close()
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 2
        with pytest.raises(ProgrammingError, match="may only read"):
            await session.execute(text("INSERT INTO t (v) VALUES ('c')"))
    assert trips == ["run_trip", "run_trip"]  # the two reads; no BEGIN, no ROLLBACK
    async with sessions() as session:  # the next session is an ordinary transaction
        await session.execute(text("INSERT INTO t (v) VALUES ('d')"))
        assert _locked(path)
        await session.commit()
    assert _visible(path) == ["a", "b", "d"]


# --- one connection, many views ---------------------------------------------------------------


def _line_of(connection: AsyncConnection) -> object:
    """The aiosqlite connection under `connection`'s view."""
    driver = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    assert isinstance(driver, sqlite_driver.OneTripConnection)
    return driver._connection


async def test_the_pools_connections_are_views_of_one_connection(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    assert engine.pool.size() > 1  # type: ignore[attr-defined]
    async with asyncio.timeout(5), engine.connect() as first, engine.connect() as second:
        assert _line_of(first) is _line_of(second)
        # A priority writer of the same file is another SQLite connection, on purpose.
        writer = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}", ahead_of=engine)
        try:
            async with writer.connect() as third:
                assert _line_of(third) is not _line_of(first)
        finally:
            await writer.dispose()


async def test_a_priority_writer_goes_ahead_of_writes_waiting_for_the_line(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """It waits for the transaction open on the line, then goes before the writes that
    were waiting for it (one of several trips, and a whole one); a read is not held up."""
    path = tmp_path / "driver.db"
    writer = create_engine(f"sqlite+aiosqlite:///{path}", durable=True, ahead_of=engine)
    sessions = create_sessionmaker(engine)

    async def several(value: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value + "2"})

    async def whole(value: str) -> None:
        async with sessions() as session:
            await last_statement_of(session)
            await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            await session.commit()

    async def priority(value: str) -> None:
        async with priority_commit(writer), writer.begin() as connection:
            ends_with_next_statement(connection)
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            # A read on the shared connection goes on meanwhile; its writes wait.
            async with reading(sessions) as session:
                await session.execute(text("SELECT count(*) FROM t"))
            assert not written.done()

    try:
        async with engine.connect() as connection:
            await connection.begin()
            await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            waiting = asyncio.create_task(several("b"))
            await _waiting_for_the_line(connection, 1)
            first = asyncio.create_task(priority("p"))
            await _waiting_for_the_line(connection, 2)
            assert priority_pending(engine)
            written = asyncio.create_task(whole("w"))
            await _waiting_for_the_line(connection, 3)
            await connection.commit()
        async with asyncio.timeout(5):
            await asyncio.gather(waiting, first, written)
    finally:
        await writer.dispose()
    assert not priority_pending(engine)
    rows = _visible(path)
    assert rows[:2] == ["a", "p"]
    assert sorted(rows[2:]) == ["b", "b2", "w"]


async def test_a_whole_transaction_waits_for_one_open_on_the_line(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A transaction sent in one trip, queued while another view's transaction is open, goes
    after it: it is not swept into it (the other's rollback keeps it) and does not fail on a
    transaction already open."""
    path = tmp_path / "driver.db"
    sessions = create_sessionmaker(engine)

    async def whole(value: str) -> None:
        async with sessions() as session:
            await last_statement_of(session)
            await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            await session.commit()

    async def read() -> int:
        async with reading(sessions) as session:
            return int((await session.execute(text("SELECT count(*) FROM t"))).scalar_one())

    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))  # holds the line
        written = asyncio.create_task(whole("b"))
        counted = asyncio.create_task(read())
        await _waiting_for_the_line(connection, 2)
        await connection.rollback()
    async with asyncio.timeout(5):
        await written
        assert await counted in (0, 1)  # before or after "b"; never "a", which was unmade
    assert _visible(path) == ["b"]


async def _waiting_for_the_line(connection: AsyncConnection, trips: int) -> None:
    driver = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    assert isinstance(driver, sqlite_driver.OneTripConnection)
    async with asyncio.timeout(5):
        # Nothing announces a trip that starts to wait: one pass of the loop at a time.
        while driver._line.waiting < trips:  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_a_transaction_of_several_trips_waits_for_another(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "driver.db"
    order: list[str] = []

    async def several(value: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value + "2"})
        order.append(value)

    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        later = asyncio.create_task(several("b"))
        await _waiting_for_the_line(connection, 1)
        await connection.execute(text("INSERT INTO t (v) VALUES ('a2')"))
        await connection.commit()
        order.append("a")
    async with asyncio.timeout(5):
        await later
    assert order == ["a", "b"]
    assert _visible(path) == ["a", "a2", "b", "b2"]


async def test_a_failed_whole_transaction_is_rolled_back_on_the_thread(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The line is let go before a transaction's last trip is answered, so the trip itself
    ends the transaction when it fails: the write lock is free before SQLAlchemy rolls back."""
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('y')"))
        ends_with_next_statement(connection)
        with pytest.raises(IntegrityError):
            await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
        assert not _locked(path)
        await connection.rollback()
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('z')"))
    assert _visible(path) == ["x", "z"]
