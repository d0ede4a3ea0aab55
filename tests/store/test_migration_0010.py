"""Ids are never reused (migration 0010): on SQLite the tables are rebuilt with AUTOINCREMENT
keeping every row, id, index and reference; on PostgreSQL the migration changes nothing. On
both, deleting the newest user or contact and creating another gives a new id, so the new
one inherits nothing (a user's API account is found by the user's id)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.crypto import SecretBox
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import alembic_config, upgrade
from parley.store.queries import users
from parley.store.queries.inbound import get_account, record_inbound
from parley.store.queries.responses import API_CHANNEL
from tests.conftest import Store
from tests.factories import inbound_text

TABLES = ("accounts", "contacts", "conversations", "messages", "users", "api_tokens")
BOX = SecretBox("test-secret-key")


async def fill(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Two users with tokens and a secret, two customers with a conversation each."""
    async with sessions() as session:
        for name in ("alice", "bob"):
            user, _ = await users.create_user(session, name=name)
            await users.set_secret(session, user_id=user.id, name="crm", value=name, box=BOX)
        await record_inbound(
            session,
            messages=[
                inbound_text("wamid.1", phone="15550001"),
                inbound_text("wamid.2", phone="15550002"),
            ],
            correlation_id="c",
        )
        await session.commit()


SNAPSHOT = {
    "users": "SELECT id, name FROM users ORDER BY id",
    "api_tokens": "SELECT id, user_id, token_hash FROM api_tokens ORDER BY id",
    "user_secrets": "SELECT user_id, name, ciphertext FROM user_secrets ORDER BY id",
    "contacts": "SELECT id, account_id, external_id FROM contacts ORDER BY id",
    "conversations": "SELECT id, account_id, contact_id FROM conversations ORDER BY id",
    "messages": "SELECT id, conversation_id, account_id, text FROM messages ORDER BY id",
}


async def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {name: await store.rows(sql) for name, sql in SNAPSHOT.items()}


async def test_the_rebuild_keeps_rows_ids_indexes_and_references(
    database_url: str, store: Store
) -> None:
    await upgrade(database_url, "0009")
    engine = create_engine(database_url)
    try:
        await fill(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    before = await snapshot(store)
    assert len(before["messages"]) == 2 and len(before["api_tokens"]) == 2
    sqlite = database_url.startswith("sqlite")
    if sqlite:
        indexes = await store.rows("SELECT name, tbl_name FROM sqlite_master WHERE type='index'")

    await upgrade(database_url, "0010")  # later migrations add indexes of their own
    assert await snapshot(store) == before
    if sqlite:
        assert sorted(
            await store.rows("SELECT name, tbl_name FROM sqlite_master WHERE type='index'")
        ) == sorted(indexes)
        for table in TABLES:
            (sql,) = await store.rows(
                "SELECT sql FROM sqlite_master WHERE type='table' AND name = ?", table
            )
            assert "AUTOINCREMENT" in sql[0], table
        assert await store.rows("PRAGMA foreign_key_check") == []
        # The references still point at the rebuilt tables: a cascade still cascades.
        async with store.engine.begin() as connection:
            await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.exec_driver_sql("DELETE FROM users WHERE name = 'alice'")
            await connection.exec_driver_sql("DELETE FROM contacts WHERE external_id = '15550001'")
        assert await store.rows("SELECT count(*) FROM api_tokens") == [(1,)]
        assert await store.rows("SELECT count(*) FROM user_secrets") == [(1,)]
        assert await store.rows("SELECT count(*) FROM messages") == [(1,)]

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0009")
    await upgrade(database_url)


async def test_a_deleted_users_id_is_never_given_again(database_url: str, store: Store) -> None:
    await upgrade(database_url)
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            victim, _ = await users.create_user(session, name="victim")
            account = await get_api_account(session, victim.id)
            await session.commit()
            victim_id = victim.id
            await users.delete_user(session, user=victim)
            await session.commit()
        async with sessions() as session:
            newcomer, _ = await users.create_user(session, name="newcomer")
            await session.commit()
        assert newcomer.id > victim_id
        assert account.external_id == str(victim_id) != str(newcomer.id)
        assert await store.rows("SELECT count(*) FROM api_tokens") == [(1,)]
    finally:
        await engine.dispose()


async def get_api_account(session: AsyncSession, user_id: int) -> Any:
    """The Responses API account a user's turns are filed under, made as their first turn does."""
    return await get_account(session, channel=API_CHANNEL, external_id=str(user_id))


async def test_a_deleted_contacts_id_is_never_given_again(database_url: str, store: Store) -> None:
    await upgrade(database_url)
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            await record_inbound(
                session, messages=[inbound_text("wamid.1", phone="15550001")], correlation_id="c"
            )
            await session.commit()
        ((contact, conversation, message),) = await store.rows(
            "SELECT c.id, v.id, m.id FROM contacts c JOIN conversations v ON v.contact_id = c.id"
            " JOIN messages m ON m.conversation_id = v.id"
        )
        async with engine.begin() as connection:  # the app's engine: foreign keys on
            await connection.exec_driver_sql(f"DELETE FROM contacts WHERE id = {contact}")
        async with sessions() as session:
            await record_inbound(
                session, messages=[inbound_text("wamid.2", phone="15550002")], correlation_id="c"
            )
            await session.commit()
        ((new_contact, new_conversation, new_message),) = await store.rows(
            "SELECT c.id, v.id, m.id FROM contacts c JOIN conversations v ON v.contact_id = c.id"
            " JOIN messages m ON m.conversation_id = v.id"
        )
        assert new_contact > contact and new_conversation > conversation
        assert new_message > message
    finally:
        await engine.dispose()
