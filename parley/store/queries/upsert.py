"""INSERT … ON CONFLICT on both engines: DO NOTHING for get-or-create under concurrency, and
the dialect's INSERT for upserts that add up (usage)."""

from __future__ import annotations

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
    insert = dialect_insert(dialect_of(session))
    # The table, not the mapped class: a Core statement, without the ORM's bulk machinery.
    table = cast(Table, model.__table__)
    statement = insert(table)
    if values:
        statement = statement.values(values)
    statement = statement.on_conflict_do_nothing(index_elements=keys)
    if not returning:
        await session.execute(statement, rows)
        return []
    # A list of rows with RETURNING: SQLAlchemy sends them as multi-row VALUES, in pages that
    # stay under each driver's limit on parameters.
    return [tuple(row) for row in await session.execute(statement.returning(*returning), rows)]
