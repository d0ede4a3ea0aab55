"""A turn's reads and outcome, and delivery's claim of what it queued, on either backend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import LeaseLost
from parley.store.models import Account, Contact, Message, Outbox
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import claim_head, mark_sent
from parley.store.queries.turns import Reply, load_work, record_turn
from tests.factories import inbound_text

HOLD = timedelta(seconds=30)


async def waiting(session: AsyncSession, *texts: str) -> tuple[int, int, list[int]]:
    """The customer's `texts`, filed; returns the conversation, the account and the messages."""
    (conversation_id,) = await record_inbound(
        session,
        messages=[inbound_text(f"wamid.{text}", text, phone="34600") for text in texts],
        correlation_id="c",
    )
    await session.commit()
    account_id = await session.scalar(select(Account.id))
    inbound = await session.scalars(
        select(Message.id).where(Message.direction == "in").order_by(Message.sequence_no)
    )
    assert account_id is not None
    return conversation_id, account_id, list(inbound)


async def test_a_turns_work_is_the_waiting_messages_in_order_with_their_parties(
    session: AsyncSession,
) -> None:
    conversation_id, account_id, inbound = await waiting(session, "one", "two")
    work = await load_work(session, conversation_id=conversation_id)
    assert work is not None
    assert [m.id for m in work.pending] == inbound
    assert [m.text for m in work.pending] == ["one", "two"]
    assert work.conversation.id == conversation_id
    assert work.account.id == account_id
    assert work.contact.id == await session.scalar(select(Contact.id))

    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("hello")],
        commits=True,
    )
    await session.commit()
    assert await load_work(session, conversation_id=conversation_id) is None


async def test_a_turn_whose_messages_another_turn_answered_stores_nothing(
    session: AsyncSession,
) -> None:
    conversation_id, account_id, inbound = await waiting(session, "hi")

    async def answer(text: str) -> None:
        await record_turn(
            session,
            conversation_id=conversation_id,
            account_id=account_id,
            answered=inbound,
            replies=[Reply(text)],
            commits=True,
        )
        await session.commit()

    await answer("first")
    with pytest.raises(LeaseLost):
        await answer("second")
    await session.rollback()

    replies = await session.scalars(select(Message.text).where(Message.direction == "out"))
    assert list(replies) == ["first"]
    assert await session.scalar(select(func.count()).select_from(Outbox)) == 1


async def test_a_claimed_head_tells_whether_replies_wait_behind_it(
    session: AsyncSession,
) -> None:
    conversation_id, account_id, inbound = await waiting(session, "hi")
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("one"), Reply("two")],
        commits=True,
    )
    await session.commit()

    sent = []
    while True:
        delivery = await claim_head(
            session, conversation_id=conversation_id, hold=HOLD, commits=True
        )
        await session.commit()
        if delivery is None:
            break
        sent.append((delivery.message.text, delivery.more))
        await mark_sent(
            session,
            outbox_id=delivery.outbox_id,
            message_id=delivery.message.id,
            channel_message_id=f"wamid.out.{len(sent)}",
        )
        await session.commit()
    assert sent == [("one", True), ("two", False)]
