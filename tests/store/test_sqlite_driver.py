"""The SQLite dialect that makes each statement one trip to aiosqlite's thread: results,
counts and errors as the stock adapter gives them, BEGIN IMMEDIATE's write lock taken by
the transaction's first statement, COMMIT sent with the last one when told, a statement
whose outcome is not read sent with the trip after it when told, and read-only sessions run
outside a transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import sqlite_driver
from parley.store.db import (
    create_engine,
    create_sessionmaker,
    defers_next_statement,
    ends_with_next_statement,
    execute_held,
    reading,
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield engine
    await engine.dispose()


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
    assert trips == ["_run", "_run"]  # BEGIN with the first statement, COMMIT with the second

    async with engine.begin() as connection:  # the next transaction is an ordinary one
        await connection.execute(text("INSERT INTO t (v) VALUES ('c')"))
        assert _visible(path) == ["a", "b"]
    assert _visible(path) == ["a", "b", "c"]
    assert trips[2:] == ["_run", "commit"]  # its statement, then its commit


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
        assert trips == ["_run"]
        defers_next_statement(connection)
        await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}])
        assert _visible(path) == []
    # The commit carries the held-back statement: one trip for both.
    assert trips == ["_run", "_run"]
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
    assert trips == ["_run"]  # BEGIN, both statements and COMMIT


async def test_a_held_back_statements_rowcount_is_known_once_the_next_trip_is_back(
    engine: AsyncEngine, tmp_path: Path, trips: list[str]
) -> None:
    path = tmp_path / "driver.db"
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"))
    trips.clear()
    async with engine.begin() as connection:
        update = text("UPDATE t SET v = v || '!' WHERE v IN ('a', 'b', 'z')")
        moved = await execute_held(connection, update, {})
        with pytest.raises(RuntimeError, match="not gone to the database yet"):
            _ = moved.value
        assert trips == []
        nothing = await execute_held(connection, text("DELETE FROM t WHERE v = 'z'"), {})
        counted = await connection.execute(text("SELECT count(*) FROM t WHERE v LIKE '%!'"))
        assert counted.scalar() == 2  # the held UPDATE ran first, in the same trip
        assert trips == ["_run"]
        assert (moved.value, nothing.value) == (2, 0)
        # Held for the COMMIT: known once the commit's trip is back.
        last = await execute_held(connection, text("DELETE FROM t WHERE v = 'c'"), {})
    assert trips == ["_run", "_run"] and last.value == 1
    assert _visible(path) == ["a!", "b!"]
    # Asked to be held back but carrying the COMMIT, it runs at once, its count known.
    async with engine.begin() as connection:
        ends_with_next_statement(connection)
        moved = await execute_held(connection, text("UPDATE t SET v = 'A' WHERE v = 'a!'"), {})
        assert moved.value == 1 and _visible(path) == ["A", "b!"]


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
        held = await execute_held(connection, text("INSERT INTO t (v) VALUES ('a')"), {})
        await connection.rollback()
        assert trips == []  # neither the statement nor its transaction reached SQLite
        with pytest.raises(RuntimeError):  # so it has no rowcount
            _ = held.value
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
    assert trips == ["_run", "_run"]  # the two reads; no BEGIN, no ROLLBACK
    async with sessions() as session:  # the next session is an ordinary transaction
        await session.execute(text("INSERT INTO t (v) VALUES ('d')"))
        assert _locked(path)
        await session.commit()
    assert _visible(path) == ["a", "b", "d"]
