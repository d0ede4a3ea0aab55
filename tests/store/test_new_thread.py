"""A Responses API thread started with its first response: on SQLite the conversation's
INSERT rides with the response's, which takes the conversation's id from it, in one trip."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from parley.store.db import create_engine, create_sessionmaker, holds_statements
from parley.store.migrate import upgrade
from parley.store.models import NewResponse, utcnow
from parley.store.queries.responses import api_parties, insert_thread_and_response
from parley.store.queries.users import create_user
from tests.store.test_sqlite_driver import trips

__all__ = ["trips"]  # the fixture, shared with test_sqlite_driver


def new_response(response_id: str, user_id: int) -> NewResponse:
    now = utcnow()
    return NewResponse(
        id=response_id,
        user_id=user_id,
        conversation_id=0,
        previous_response_id=None,
        status="in_progress",
        profile="default",
        request={"input": "hi"},
        output=[],
        meta={},
        background=False,
        idempotency_key=None,
        request_hash="h",
        created_at=now,
        heartbeat_at=now,
    )


async def test_the_thread_and_its_first_response_go_in_one_trip(
    tmp_path: Path, trips: list[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await upgrade(url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            user, _ = await create_user(session, name="ann")
            account, contact = await api_parties(session, user_id=user.id, user_name="ann")
            await session.commit()
        threads = []
        for response_id in ("resp_1", "resp_2"):
            async with sessions() as session:
                assert holds_statements(await session.connection())
                # A row inserted just before, in the same transaction, is not the one the
                # response refers to (its id is SQLite's last inserted until the thread's).
                await session.execute(
                    text(
                        "INSERT INTO contacts (account_id, external_id, created_at, updated_at) "
                        "VALUES (:a, :x, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"a": account.id, "x": f"other {response_id}"},
                )
                trips.clear()
                record = new_response(response_id, user.id)
                thread = await insert_thread_and_response(
                    session,
                    account=account,
                    contact=contact,
                    profile="sales",
                    record=record,
                    commits=True,
                )
                await session.commit()
                assert trips == ["_run"]  # both INSERTs and the COMMIT
                assert record.conversation_id == thread.conversation.id
                threads.append(thread.conversation.id)
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT r.id, c.id, c.account_id, c.contact_id, c.channel, c.profile "
                    "FROM responses r JOIN conversations c ON c.id = r.conversation_id "
                    "ORDER BY r.id"
                )
            )
            assert [tuple(row) for row in rows] == [
                ("resp_1", threads[0], account.id, contact.id, "api", "sales"),
                ("resp_2", threads[1], account.id, contact.id, "api", "sales"),
            ]
        assert threads[0] != threads[1]
    finally:
        await engine.dispose()
