"""Migration 0012 indexes a conversation's messages by what a turn and a send ask of them: on
SQLite their reads then find the rows by those indexes instead of walking the conversation's
messages; going down and up again drops and restores them with the rows kept."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Select

from parley.store.migrate import alembic_config, upgrade
from parley.store.queries.outbox import _claimed_statement
from parley.store.queries.turns import (
    _inbound_since_statement,
    _waits_statement,
    _work_columns_statement,
)
from tests.conftest import Store

INDEXES = {"ix_messages_waiting", "ix_messages_inbound_time"}


async def message_indexes(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        found = await connection.run_sync(lambda c: inspect(c).get_indexes("messages"))
    return {index["name"] for index in found if index["name"]}


async def test_it_adds_the_indexes_and_takes_them_away_going_down(
    database_url: str, store: Store
) -> None:
    await upgrade(database_url)
    assert await message_indexes(store) >= INDEXES
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0011")
    assert not INDEXES & await message_indexes(store)
    await upgrade(database_url)
    assert await message_indexes(store) >= INDEXES


async def plan(store: Store, statement: Select[object]) -> str:
    sql = str(statement.compile(dialect=sqlite.dialect()))
    async with store.engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {sql}", tuple([None] * sql.count("?"))
        )
        return "\n".join(str(cast(Any, row)[3]) for row in rows)  # (id, parent, _, detail)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_turns_and_a_sends_reads_find_the_rows_by_them(
    database_url: str, store: Store
) -> None:
    await upgrade(database_url)
    walked = "sqlite_autoindex_messages"  # (conversation_id, sequence_no): every message
    for statement, index in (
        (_work_columns_statement(), "ix_messages_waiting"),
        (_waits_statement(), "ix_messages_waiting"),
        (_inbound_since_statement(True), "ix_messages_inbound_time"),
        (_claimed_statement(), "ix_messages_inbound_time"),  # when the customer last wrote
    ):
        found = await plan(store, statement)
        assert index in found and walked not in found, found
    assert "TEMP B-TREE" not in await plan(store, _claimed_statement())  # no sort
