"""Migration 0011 gives responses a heartbeat: a response left open by a process that died
before the migration has none, and is judged by when it was created; going down and up again
keeps the rows."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy.ext.asyncio import async_sessionmaker

from parley.responses.lease import ORPHANED_ERROR, ResponseLease
from parley.store.migrate import alembic_config, upgrade
from parley.store.models import ResponseRecord
from parley.store.queries import users
from tests.conftest import Store

COLUMNS = "SELECT id, status, heartbeat_at FROM responses ORDER BY id"


async def test_open_responses_from_before_it_are_swept_by_their_age(
    database_url: str, store: Store
) -> None:
    await upgrade(database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0010")
    sessions = async_sessionmaker(store.engine, expire_on_commit=False)
    async with sessions() as session:
        user, _ = await users.create_user(session, name="alice")
        await session.commit()
    async with store.engine.begin() as connection:
        for response_id, status in (("resp_old", "in_progress"), ("resp_done", "completed")):
            await connection.exec_driver_sql(
                "INSERT INTO responses (id, user_id, status, profile, request, output, meta,"
                " background, created_at)"
                f" VALUES ('{response_id}', {user.id}, '{status}', 'default', '{{}}', '[]',"
                " '{}', true, '2026-11-01 08:00:00+00:00')"
            )

    await upgrade(database_url)
    assert await store.rows(COLUMNS) == [
        ("resp_done", "completed", None),
        ("resp_old", "in_progress", None),
    ]
    swept = await ResponseLease(sessions=sessions, running=list, lease=60).sweep()
    assert swept == ["resp_old"]
    rows = await store.rows("SELECT id, status FROM responses ORDER BY id")
    assert rows == [("resp_done", "completed"), ("resp_old", "failed")]

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0010")
    assert len(await store.rows("SELECT * FROM responses")) == 2
    await upgrade(database_url)
    async with sessions() as session:
        record = await session.get(ResponseRecord, "resp_old")
    assert record is not None and record.error == ORPHANED_ERROR
    assert record.heartbeat_at is None  # the sweep marks it ended; it never beat
