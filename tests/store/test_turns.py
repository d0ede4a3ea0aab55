"""A turn's reads and outcome, and delivery's claim of what it queued, on either backend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import ConversationGone, LeaseLost
from parley.store.direct import DirectWrites, Reads
from parley.store.models import Account, Contact, Conversation, Message, Outbox, UsageDaily
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import Delivery, claim_head, claim_head_directly, mark_sent
from parley.store.queries.turns import Reply, load_work, record_turn
from parley.store.queries.usage import UsageAdd
from tests.factories import inbound_text

HOLD = timedelta(seconds=30)
USAGE = UsageAdd(
    "m", input_tokens=3, cached_tokens=0, output_tokens=2, reasoning_tokens=0, cost_usd=None
)


async def waiting(
    session: AsyncSession, *texts: str, phone: str = "34600"
) -> tuple[int, int, list[int]]:
    """The customer's `texts`, filed; returns the conversation, the account and the messages."""
    (conversation_id,) = await record_inbound(
        session,
        messages=[inbound_text(f"wamid.{text}", text, phone=phone) for text in texts],
        correlation_id="c",
    )
    await session.commit()
    account_id = await session.scalar(select(Account.id))
    inbound = await session.scalars(
        select(Message.id)
        .where(Message.conversation_id == conversation_id, Message.direction == "in")
        .order_by(Message.sequence_no)
    )
    assert account_id is not None
    return conversation_id, account_id, list(inbound)


async def test_a_turns_work_is_the_waiting_messages_in_order_with_their_parties(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], direct: DirectWrites | None
) -> None:
    reads = Reads(sessions, direct)
    conversation_id, account_id, inbound = await waiting(session, "one", "two")
    await session.commit()  # the line free for the direct reads
    work = await load_work(reads, conversation_id=conversation_id)
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
    assert await load_work(reads, conversation_id=conversation_id) is None


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


async def claimed(
    session: AsyncSession, direct: DirectWrites | None, conversation_id: int
) -> Delivery | None:
    """The conversation's head claimed through a session, or on SQLite's line without one."""
    if direct is not None:
        return await claim_head_directly(direct, conversation_id=conversation_id, hold=HOLD)
    delivery = await claim_head(session, conversation_id=conversation_id, hold=HOLD, commits=True)
    await session.commit()
    return delivery


async def test_a_claimed_head_tells_whether_replies_wait_behind_it(
    session: AsyncSession, direct: DirectWrites | None
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

    customer = await session.get(Message, inbound[0])
    contact_id = await session.scalar(select(Contact.id))
    assert customer is not None
    await session.commit()  # the line free for the direct claims
    sent = []
    while True:
        delivery = await claimed(session, direct, conversation_id)
        if delivery is None:
            break
        sent.append((delivery.message.text, delivery.more))
        assert inspect(delivery.message).detached
        assert delivery.account.id == account_id
        assert delivery.contact.id == contact_id
        assert delivery.last_customer_at == customer.created_at
        assert delivery.attempts == 0
        assert await claimed(session, direct, conversation_id) is None  # held by the claim
        await mark_sent(
            session,
            outbox_id=delivery.outbox_id,
            message_id=delivery.message.id,
            channel_message_id=f"wamid.out.{len(sent)}",
        )
        await session.commit()
    assert sent == [("one", True), ("two", False)]


async def test_a_turns_outcome_is_one_trip_on_sqlite_and_numbered_after_what_came_before(
    session: AsyncSession, backend: str, trips: list[str]
) -> None:
    conversation_id, account_id, inbound = await waiting(session, "one", "two")
    trips.clear()
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("noted", deliver=False), Reply("a"), Reply("b")],
        usage=USAGE,
        agent_turn=True,
        commits=True,
    )
    if backend == "sqlite":
        assert trips == ["run_trip"]  # BEGIN, claim, counter, replies, outbox, usage, COMMIT
    rows = await session.execute(
        select(Message.sequence_no, Message.direction, Message.text, Message.status)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.sequence_no)
    )
    assert [tuple(row) for row in rows] == [
        (1, "in", "one", "answered"),
        (2, "in", "two", "answered"),
        (3, "internal", "noted", "done"),
        (4, "out", "a", "queued"),
        (5, "out", "b", "queued"),
    ]
    queued = await session.scalars(
        select(Message.text).join(Outbox, Outbox.message_id == Message.id).order_by(Outbox.id)
    )
    assert list(queued) == ["a", "b"]
    counter = await session.scalar(
        select(Conversation.next_sequence_no).where(Conversation.id == conversation_id)
    )
    assert counter == 6


async def test_a_turn_for_a_conversation_a_person_took_or_that_is_gone_stores_nothing(
    session: AsyncSession,
) -> None:
    conversation_id, account_id, inbound = await waiting(session, "hi")

    async def answer() -> None:
        await record_turn(
            session,
            conversation_id=conversation_id,
            account_id=account_id,
            answered=inbound,
            replies=[Reply("hello")],
            usage=USAGE,
            agent_turn=True,
            commits=True,
        )

    await session.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(mode="human")
    )
    await session.commit()
    with pytest.raises(LeaseLost):
        await answer()
    await session.rollback()
    assert await session.scalar(select(Message.status).where(Message.id == inbound[0])) == (
        "received"  # left for the person
    )
    await session.execute(delete(Message).where(Message.conversation_id == conversation_id))
    await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
    await session.commit()
    with pytest.raises(ConversationGone):  # not LeaseLost: its inputs are gone with it
        await answer()
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(Message)) == 0
    assert await session.scalar(select(func.count()).select_from(UsageDaily)) == 0
