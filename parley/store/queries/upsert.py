"""INSERT … ON CONFLICT on both engines: DO NOTHING for get-or-create under concurrency, and
the dialect's INSERT for upserts that add up (usage)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_ignore(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any], keys: list[str]
) -> None:
    """Insert a row unless one with the same `keys` exists (a concurrent writer may win)."""
    insert = dialect_insert(dialect_of(session))
    statement = insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    await session.execute(statement)


def dialect_of(session: AsyncSession) -> str:
    """The session's database: ``postgresql`` or ``sqlite``."""
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def dialect_insert(dialect: str) -> Callable[..., Any]:
    """The INSERT construct with ON CONFLICT for `dialect` (``postgresql`` or ``sqlite``)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def insert_ignore_many(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: list[dict[str, Any]],
    keys: list[str],
    returning: Sequence[ColumnElement[Any]] = (),
    values: Mapping[str, ColumnElement[Any]] | None = None,
) -> list[tuple[Any, ...]]:
    """Insert `rows` in one multi-row statement (a few, for very many rows), skipping those
    whose `keys` exist already; returns `returning` of the rows inserted, in no set order.
    `values`: columns each row takes from SQL expressions (on the rows' other values)."""
    if not rows:
        return []
    statement = _insert_ignore_statement(
        dialect_of(session),
        cast(Table, model.__table__),
        tuple(keys),
        tuple(returning),
        tuple((values or {}).items()),
    )
    if not returning:
        await session.execute(statement, rows)
        return []
    # A list of rows with RETURNING: SQLAlchemy sends them as multi-row VALUES, in pages that
    # stay under each driver's limit on parameters.
    return [tuple(row) for row in await session.execute(statement, rows)]


@functools.cache
def _insert_ignore_statement(
    dialect: str,
    table: Table,
    keys: tuple[str, ...],
    returning: tuple[ColumnElement[Any], ...],
    values: tuple[tuple[str, ColumnElement[Any]], ...],
) -> Any:
    """The statement of `insert_ignore_many`, built once for each shape: the filer inserts a
    batch with it every few milliseconds under load, and building it each time cost more than
    SQLite's work and left reference cycles (SQLAlchemy's expressions) for the garbage
    collector. `returning` and `values` are keys by identity: give the same expressions, built
    once, each time (a new one each call would be a new entry here)."""
    # The table, not the mapped class: a Core statement, without the ORM's bulk machinery.
    statement = dialect_insert(dialect)(table)
    if values:
        statement = statement.values(dict(values))
    statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    return statement.returning(*returning) if returning else statement
