"""Recording inbound messages on a real, migrated SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.models import Contact, Conversation, Message
from parley.store.queries.inbound import record_inbound
from tests.factories import inbound_text


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()


async def test_a_customer_keeps_one_conversation_when_their_bsuid_appears(
    session: AsyncSession,
) -> None:
    first = await record_inbound(
        session, messages=[inbound_text("wamid.1", phone="34600")], correlation_id="c1"
    )
    second = await record_inbound(
        session,
        messages=[inbound_text("wamid.2", phone="34600", user_id="ES.123")],
        correlation_id="c2",
    )
    third = await record_inbound(
        session,
        messages=[inbound_text("wamid.3", phone=None, user_id="ES.123")],
        correlation_id="c3",
    )
    await session.commit()

    assert first == second == third
    assert await session.scalar(select(func.count()).select_from(Contact)) == 1
    assert await session.scalar(select(func.count()).select_from(Conversation)) == 1
    contact = await session.scalar(select(Contact))
    assert contact is not None and (contact.phone, contact.user_id) == ("34600", "ES.123")
    rows = (await session.execute(select(Message.sequence_no, Message.meta))).all()
    assert [(seq, meta["correlation_id"]) for seq, meta in rows] == [
        (1, "c1"),
        (2, "c2"),
        (3, "c3"),
    ]


async def test_duplicates_within_and_across_batches_are_stored_once(session: AsyncSession) -> None:
    message = inbound_text("wamid.dup", phone="34601")
    waiting = await record_inbound(session, messages=[message, message], correlation_id="c")
    again = await record_inbound(session, messages=[message], correlation_id="c")
    await session.commit()

    assert len(waiting) == 1
    assert again == []
    assert await session.scalar(select(func.count()).select_from(Message)) == 1
