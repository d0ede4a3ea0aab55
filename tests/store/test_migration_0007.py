"""Migration 0007 on a database that has conversations: those handed off before it are in
human mode after it, the others with the agent, and every one has a last activity to be
listed by; going back down restores `handoff`."""

from __future__ import annotations

import asyncio

from alembic import command

from parley.store.migrate import alembic_config, upgrade
from tests.conftest import Store

ROWS = [
    ("1001", "active", None, "2026-11-01 10:00:00+00:00"),
    ("1002", "handoff", "2026-11-02 09:30:00+00:00", None),
]


async def test_handed_off_conversations_become_human_mode(database_url: str, store: Store) -> None:
    await upgrade(database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0006")
    async with store.engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO accounts (id, channel, external_id, settings, created_at)"
            " VALUES (1, 'whatsapp', '555', '{}', '2026-11-01 00:00:00+00:00')"
        )
    for index, (external, status, handed_off_at, last) in enumerate(ROWS, start=1):
        async with store.engine.begin() as connection:
            await connection.exec_driver_sql(
                "INSERT INTO contacts (id, account_id, external_id, created_at, updated_at)"
                f" VALUES ({index}, 1, '{external}', '2026-11-01 00:00:00+00:00',"
                " '2026-11-01 00:00:00+00:00')"
            )
            await connection.exec_driver_sql(
                "INSERT INTO conversations (id, account_id, contact_id, channel, status,"
                " handed_off_at, next_sequence_no, created_at, updated_at, last_message_at)"
                f" VALUES ({index}, 1, {index}, 'whatsapp', '{status}',"
                f" {repr(handed_off_at) if handed_off_at else 'NULL'}, 1,"
                " '2026-11-01 08:00:00+00:00', '2026-11-01 08:00:00+00:00',"
                f" {repr(last) if last else 'NULL'})"
            )

    await upgrade(database_url)
    rows = await store.rows(
        "SELECT id, status, mode, assignee, mode_changed_at IS NOT NULL,"
        " last_message_at IS NOT NULL FROM conversations ORDER BY id"
    )
    assert rows == [
        (1, "active", "agent", None, False, True),
        (2, "active", "human", None, True, True),
    ]
    assert await store.rows("SELECT count(*) FROM handoff_notices") == [(0,)]

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0006")
    assert await store.rows("SELECT id, status FROM conversations ORDER BY id") == [
        (1, "active"),
        (2, "handoff"),
    ]
    await upgrade(database_url)
