"""Recording inbound messages on a real, migrated SQLite file."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Contact, Conversation, Message
from parley.store.queries.inbound import Stored, record_inbound
from tests.factories import inbound_text


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


async def contact_of(session: AsyncSession, mid: str) -> tuple[int, str | None, str | None]:
    """(contact id, phone, user id) of the contact whose conversation holds `mid`."""
    row = (
        await session.execute(
            select(Contact.id, Contact.phone, Contact.user_id)
            .join(Conversation, Conversation.contact_id == Contact.id)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Message.channel_message_id == mid)
        )
    ).one()
    return row[0], row[1], row[2]


async def test_one_batch_of_many_customers_finds_the_known_and_creates_the_new(
    session: AsyncSession,
) -> None:
    await record_inbound(
        session,
        messages=[
            inbound_text("old.phone", phone="34610"),
            inbound_text("old.bsuid", phone=None, user_id="ES.620"),
            inbound_text("old.both", phone="34630", user_id="ES.630"),
        ],
        correlation_id="c1",
    )
    await session.commit()
    known = {mid: await contact_of(session, mid) for mid in ("old.phone", "old.bsuid", "old.both")}

    stored: list[Stored] = []
    batch = [
        inbound_text("new.1", phone="34640"),
        inbound_text("phone.gets.bsuid", phone="34610", user_id="ES.610"),
        inbound_text("old.both", phone="34630", user_id="ES.630"),  # filed by the first batch
        inbound_text("bsuid.only", phone=None, user_id="ES.620"),
        inbound_text("new.2", phone="34650", user_id="ES.650"),
        inbound_text("both.by.phone", phone="34630", user_id=None),
        inbound_text("new.1", phone="34640"),  # Meta's re-delivery in the same batch
        inbound_text(
            "new.3", phone="34640", user_id="ES.640"
        ),  # new.1's customer, now with a BSUID
    ]
    waiting = await record_inbound(session, messages=batch, correlation_id="c2", stored=stored)
    await session.commit()

    assert await contact_of(session, "phone.gets.bsuid") == (
        known["old.phone"][0],
        "34610",
        "ES.610",
    )
    assert await contact_of(session, "bsuid.only") == known["old.bsuid"]
    assert await contact_of(session, "both.by.phone") == known["old.both"]
    new_customer = await contact_of(session, "new.1")
    assert new_customer[1:] == ("34640", "ES.640")
    assert await contact_of(session, "new.3") == new_customer
    assert (await contact_of(session, "new.2"))[1:] == ("34650", "ES.650")
    assert await session.scalar(select(func.count()).select_from(Contact)) == 5
    assert await session.scalar(select(func.count()).select_from(Conversation)) == 5
    assert await session.scalar(select(func.count()).select_from(Message)) == 9
    filed = [s.message.channel_message_id for s in stored]
    assert sorted(filed) == sorted(
        ["new.1", "phone.gets.bsuid", "bsuid.only", "new.2", "both.by.phone", "new.3"]
    )
    assert len({s.conversation_id for s in stored}) == len(waiting) == 5
    assert set(waiting) == {s.conversation_id for s in stored}


async def test_a_customers_messages_keep_their_order_within_and_across_batches(
    session: AsyncSession,
) -> None:
    others = [inbound_text(f"other.{n}", phone=f"3466{n}") for n in range(3)]
    first = [inbound_text("ana.1", "one", phone="34600"), *others]
    second = [
        inbound_text("ana.2", "two", phone="34600"),
        inbound_text("ben.1", phone="34670"),
        inbound_text("ana.3", "three", phone="34600", user_id="ES.600"),
        inbound_text("ana.1", "one", phone="34600"),  # filed by the first batch
        inbound_text("ana.4", "four", phone="34600"),
    ]
    await record_inbound(session, messages=first, correlation_id="c1")
    await record_inbound(session, messages=second, correlation_id="c2")
    await session.commit()

    conversation, _, _ = await contact_of(session, "ana.1")
    rows = await session.execute(
        select(Message.sequence_no, Message.text)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.contact_id == conversation)
        .order_by(Message.sequence_no)
    )
    assert [(seq, text) for seq, text in rows] == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
    ]
