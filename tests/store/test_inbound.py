"""Recording inbound messages on a real, migrated SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import InboundMessage
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.models import Contact, Conversation, Message
from parley.store.queries.inbound import record_inbound


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()


def inbound(
    mid: str, *, phone: str | None, user_id: str | None, text: str = "hi"
) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_external_id="106540352242922",
        channel_message_id=mid,
        user_id=user_id,
        phone=phone,
        contact_name="Ana",
        contact_username=None,
        kind="text",
        text=text,
        needs_reply=True,
        timestamp=datetime.now(UTC),
    )


async def test_a_customer_keeps_one_conversation_when_their_bsuid_appears(
    session: AsyncSession,
) -> None:
    first = await record_inbound(
        session, messages=[inbound("wamid.1", phone="34600", user_id=None)], correlation_id="c1"
    )
    second = await record_inbound(
        session,
        messages=[inbound("wamid.2", phone="34600", user_id="ES.123")],
        correlation_id="c2",
    )
    third = await record_inbound(
        session, messages=[inbound("wamid.3", phone=None, user_id="ES.123")], correlation_id="c3"
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
    message = inbound("wamid.dup", phone="34601", user_id=None)
    waiting = await record_inbound(session, messages=[message, message], correlation_id="c")
    again = await record_inbound(session, messages=[message], correlation_id="c")
    await session.commit()

    assert len(waiting) == 1
    assert again == []
    assert await session.scalar(select(func.count()).select_from(Message)) == 1
