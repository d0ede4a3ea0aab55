"""The inbox: raw webhook bodies appended by the door and taken, oldest first, by the filer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from parley.store.db import execute_guarded
from parley.store.direct import DirectWrites, Stale, Step, step
from parley.store.models import INBOX, InboxEntry, utcnow

# One PostgreSQL advisory lock key for "someone is filing": see `take_oldest`.
FILER_LOCK = 0x50_61_72_6C_65_79  # "Parley"


@dataclass(frozen=True)
class Arrival:
    """A webhook the door accepted, waiting to be appended."""

    channel: str
    body: bytes
    correlation_id: str


@dataclass(frozen=True)
class InboxRow:
    id: int
    channel: str
    body: bytes
    correlation_id: str
    received_at: datetime


_APPEND_COLUMNS = ("channel", "body", "correlation_id", "received_at")


@dataclass(frozen=True, slots=True)
class _Append:
    """The inbox INSERT as one dialect's driver takes it."""

    sql: str
    named: bool  # the driver takes a dict per row (pyformat), else a tuple in column order
    received_at: Callable[[datetime], Any]  # the time as the driver takes it


_APPENDS: dict[tuple[str, str], _Append] = {}


def _append_for(dialect: Dialect) -> _Append:
    key = (dialect.name, dialect.driver)
    found = _APPENDS.get(key)
    if found is None:
        compiled = insert(INBOX).inline().compile(dialect=dialect, column_keys=_APPEND_COLUMNS)
        named = not compiled.positional
        if not named and compiled.positiontup != list(_APPEND_COLUMNS):
            raise RuntimeError(f"inbox INSERT parameters out of order: {compiled.positiontup}")
        convert = INBOX.c.received_at.type._cached_bind_processor(dialect)
        found = _APPENDS[key] = _Append(str(compiled), named, convert or (lambda value: value))
    return found


async def append(connection: AsyncConnection, arrivals: Sequence[Arrival]) -> None:
    """Insert every arrival in one statement (executemany); the caller commits. The writer's
    path on SQLite until its line is open (then `append_directly`) and on a PostgreSQL driver
    other than asyncpg (`append_held` is asyncpg's); tests file with it too.

    The rows go to the driver as they are (`exec_driver_sql`, the statement compiled once per
    dialect): every webhook is a row here, and as a Core INSERT each row's four values went
    through SQLAlchemy's parameter processing one by one. The strings and bytes need none on
    any driver; the time, the one typed value and the same for the whole batch, is converted
    once by its column's type.
    """
    statement = _append_for(connection.dialect)
    now = statement.received_at(utcnow())
    rows: list[Any] = [(a.channel, a.body, a.correlation_id, now) for a in arrivals]
    if statement.named:
        rows = [dict(zip(_APPEND_COLUMNS, row, strict=True)) for row in rows]
    await connection.exec_driver_sql(statement.sql, rows)


async def append_directly(direct: DirectWrites, arrivals: Sequence[Arrival]) -> None:
    """`append` and its COMMIT on SQLite without a connection of SQLAlchemy's: the BEGIN, the
    INSERT and the COMMIT in one trip on the writer's line (`store.direct`). A webhook's
    acknowledgement waits for this; at a few concurrent webhooks each commit takes one or
    two, and taking the engine's connection, opening its transaction and giving it back cost
    more than the INSERT.

    The rows go in one INSERT of many rows (`VALUES (…), (…)`), not an executemany: SQLite's
    thread takes the GIL back after each row of an executemany, and while the event loop is
    busy each of those waits up to the switch interval. With a thread holding the GIL beside
    it, 32 rows took 9.4 ms as an executemany and 2.9 ms as one statement (p50); under a burst
    of webhooks the commit's time bounds how many are acknowledged a second (docs/benchmarks.md,
    2026-12-03, session 20)."""
    await direct.commit(
        [Step(sql, values) for sql, values in _in_inserts(direct.dialect, arrivals)]
    )


async def append_held(connection: AsyncConnection, arrivals: Sequence[Arrival]) -> None:
    """`append` on PostgreSQL, on the autocommit connection that the inbox writer holds while
    webhooks keep coming (`create_inbox_engine`): each INSERT of up to `_ROWS_PER_INSERT` rows
    is its own implicit transaction, sent by asyncpg itself in one round trip.

    What this leaves out, measured on an idle machine for 33 rows: the executemany (one
    Bind and Execute a row) through `engine.begin()` took 0.94 ms and 0.44 ms of the process's
    CPU; one INSERT of many rows through asyncpg on a connection already held, 0.41 and 0.11 ms.
    The pool's checkout and checkin alone were 0.23 ms of CPU, SQLAlchemy's execution context
    0.13. Several INSERTs are not one transaction: a batch whose second INSERT fails is
    answered 503 with its first rows kept, and the channel's re-delivery of those is filed as
    a known message id, a no-op."""
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    for sql, values in _in_inserts(connection.dialect, arrivals):
        await driver.execute(sql, *values)


def _in_inserts(dialect: Dialect, arrivals: Sequence[Arrival]) -> list[tuple[str, list[Any]]]:
    """`arrivals` as INSERTs of up to `_ROWS_PER_INSERT` rows each, in order: the SQL and the
    values in their places."""
    now = _append_for(dialect).received_at(utcnow())
    inserts = []
    for start in range(0, len(arrivals), _ROWS_PER_INSERT):
        chunk = arrivals[start : start + _ROWS_PER_INSERT]
        values = [v for a in chunk for v in (a.channel, a.body, a.correlation_id, now)]
        inserts.append((_rows_sql(dialect, len(chunk)), values))
    return inserts


_ROWS_PER_INSERT = 200
"""Rows in one INSERT of `append_directly` and `append_held` at most: 800 parameters, under
the 999 that SQLite allowed before 3.32 (and PostgreSQL's 65,535)."""

_PLACEHOLDERS: dict[str, Callable[[int], str]] = {
    "qmark": lambda _: "?",  # aiosqlite
    "numeric_dollar": lambda n: f"${n}",  # asyncpg
}
"""The n-th positional parameter (from 1), per paramstyle of the drivers that take these
INSERTs (`append_directly`, `append_held`)."""


@functools.lru_cache(maxsize=512)
def _rows_sql(dialect: Dialect, rows: int) -> str:
    """The inbox INSERT of `rows` rows (`VALUES (…), (…)`), taking the four columns of each
    row in turn: the single-row statement as SQLAlchemy compiles it (`_append_for`, whose
    first row may cast its parameters), then the other rows' placeholders. Compiling each size
    through SQLAlchemy took 1.5-13 ms, on the event loop, the first time a batch had it."""
    single = _append_for(dialect)
    if single.named:
        raise RuntimeError(f"no INSERT of many rows for {dialect.paramstyle} parameters")
    place = _PLACEHOLDERS[dialect.paramstyle]
    width = len(_APPEND_COLUMNS)
    more = [
        f"({', '.join(place(row * width + column) for column in range(1, width + 1))})"
        for row in range(1, rows)
    ]
    return ", ".join([single.sql, *more])


async def take_oldest(session: AsyncSession, *, limit: int) -> list[InboxRow] | None:
    """The oldest unfiled rows, in id order; None when another process is filing (PostgreSQL).

    Order: a customer's message 2 is sent only after message 1 was acknowledged, that is after
    its row committed, so row 2 gets a larger id and any snapshot that sees row 2 sees row 1.
    Filing oldest first keeps order as long as ONE filer runs at a time: two filers taking
    disjoint batches (SKIP LOCKED) could commit the later batch first and give message 2 the
    lower sequence number. So the filing transaction takes a transaction-level advisory lock
    and a process that does not get it files nothing this time. SQLite needs no lock: one
    process owns the file and BEGIN IMMEDIATE serialises its writers.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        got = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FILER_LOCK}
        )
        if not got:
            return None
    connection = await session.connection()
    rows = await connection.execute(_TAKE_OLDEST, {"limit": limit})
    return [InboxRow(*row) for row in rows]


async def take_oldest_directly(direct: DirectWrites, *, limit: int) -> list[InboxRow]:
    """`take_oldest` on SQLite without a session: read outside a transaction, for a filer
    whose transaction is sent whole afterwards (`removal`). SQLite's one process runs one
    filer, so the rows are still there then."""
    oldest = direct.prepared("inbox oldest", lambda: _TAKE_OLDEST)
    rows = await direct.read(oldest, {"limit": limit})
    return [InboxRow(*row) for row in rows]


def removal(direct: DirectWrites, ids: Sequence[int]) -> Step:
    """`remove` as a step of a direct transaction."""
    return step(direct.prepared("inbox removed", lambda: _REMOVE), {"ids": list(ids)})


async def remove(session: AsyncSession, ids: Sequence[int], *, read_before: bool = False) -> None:
    """Delete the filed rows `ids`. `read_before`: they were read before this transaction
    (`take_oldest_directly`), and if one of them is gone (an erasure deleted the rows naming
    its customer meanwhile), nothing of the transaction is kept and `Stale` is raised: what
    it filed from that row must not be stored."""
    if not ids:
        return
    connection = await session.connection()
    if read_before:
        await execute_guarded(
            connection,
            _REMOVE,
            {"ids": list(ids)},
            expect=len(ids),
            refusal=_rows_gone,
            hold=False,
        )
    else:
        await connection.execute(_REMOVE, {"ids": list(ids)})


def _rows_gone(removed: int) -> Stale:
    return Stale(f"inbox rows deleted while they were filed ({removed} left to remove)")


# Built once (their cache keys too), as Core statements: the filer runs both per transaction.
_TAKE_OLDEST = (
    select(INBOX.c.id, INBOX.c.channel, INBOX.c.body, INBOX.c.correlation_id, INBOX.c.received_at)
    .where(INBOX.c.failed_at.is_(None))
    .order_by(INBOX.c.id)
    .limit(bindparam("limit"))
)
_REMOVE = delete(INBOX).where(INBOX.c.id.in_(bindparam("ids", expanding=True)))


async def mark_unreadable(session: AsyncSession, *, row_id: int, error: str) -> None:
    """Keep the row for audit, out of the filer's way."""
    await session.execute(
        update(InboxEntry)
        .where(InboxEntry.id == row_id)
        .values(failed_at=utcnow(), error=error[:2000])
    )


async def unfiled(session: AsyncSession) -> int:
    """Rows still waiting to be filed (the unreadable ones are not waiting)."""
    count = await session.scalar(
        select(func.count()).select_from(InboxEntry).where(InboxEntry.failed_at.is_(None))
    )
    return int(count or 0)
