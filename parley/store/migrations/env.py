"""Alembic environment: runs the migrations on an async engine, SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from parley.store.models import Base

target_metadata = Base.metadata

MIGRATION_LOCK = 0x50_61_72_6C_65_7A  # "Parlez": one migration at a time on a server
"""PostgreSQL advisory lock taken for the migration's transaction. Any number of `parley api`
processes may start at once against one database, and each applies what is pending: the
first migrates, the others wait for its commit, then read its version and find nothing to do.
(PostgreSQL runs the migrations in one transaction: DDL is transactional there.)"""


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool, hide_parameters=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


_url = context.config.get_main_option("sqlalchemy.url")
if _url is None:
    raise RuntimeError("sqlalchemy.url is not set")
if context.is_offline_mode():
    _run_offline(_url)
else:
    asyncio.run(_run_async(_url))
