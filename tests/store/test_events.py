"""Filing conversation events (echoes, edits, unsends, reactions, reads) on a real, migrated
database, below the HTTP door."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import ConversationEvent, InboundMessage
from parley.store.models import Account, Conversation, HandoffNotice, Message, Outbox
from parley.store.queries.events import apply_events
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import mark_sent
from parley.store.queries.turns import Reply, record_turn
from tests.factories import last_reply_ids

ACCOUNT = "17841400538867190"
USER = "1129842642640637"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def said(mid: str, text: str = "hi") -> InboundMessage:
    return InboundMessage(
        channel="instagram",
        account_external_id=ACCOUNT,
        channel_message_id=mid,
        user_id=USER,
        phone=None,
        contact_name=None,
        contact_username=None,
        kind="text",
        text=text,
        needs_reply=True,
        timestamp=NOW,
    )


def event(kind: Any, mid: str | None, **fields: Any) -> ConversationEvent:
    fields.setdefault("user_id", USER)
    return ConversationEvent(
        channel="instagram",
        account_external_id=fields.pop("account", ACCOUNT),
        kind=kind,
        channel_message_id=mid,
        timestamp=NOW,
        **fields,
    )


async def apply(session: AsyncSession, *events: ConversationEvent) -> int:
    applied = await apply_events(session, events=list(events), correlation_id="c")
    await session.commit()
    return applied


async def answered(session: AsyncSession, mid: str, replies: list[str]) -> list[str]:
    """The customer's `mid` stored and answered with `replies`, each sent with an id."""
    (conversation_id,) = await record_inbound(session, messages=[said(mid)], correlation_id="c")
    account_id = await session.scalar(select(Account.id).where(Account.external_id == ACCOUNT))
    inbound = await session.scalar(select(Message.id).where(Message.channel_message_id == mid))
    assert account_id is not None and inbound is not None
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=[inbound],
        replies=[Reply(text) for text in replies],
    )
    ids = await last_reply_ids(session, conversation_id, len(replies))
    sent = [f"{mid}-out-{n}" for n in range(len(ids))]
    for message_id, channel_id in zip(ids, sent, strict=True):
        await mark_sent(session, outbox_id=-1, message_id=message_id, channel_message_id=channel_id)
    await session.commit()
    return sent


async def statuses(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(
        select(Message.channel_message_id, Message.status).where(Message.direction == "out")
    )
    return {str(mid): status for mid, status in rows}


async def test_a_read_covers_the_message_read_and_those_before_it(session: AsyncSession) -> None:
    first = await answered(session, "m.1", ["one", "two"])
    second = await answered(session, "m.2", ["three"])

    assert await apply(session, event("read", first[1], user_id=None)) == 1
    assert await statuses(session) == {first[0]: "read", first[1]: "read", second[0]: "sent"}
    assert await apply(session, event("read", first[0])) == 0  # nothing new
    assert await apply(session, event("read", "m.1")) == 0  # the customer's own message


async def test_reactions_are_kept_and_taken_back(session: AsyncSession) -> None:
    (ours,) = await answered(session, "m.1", ["one"])
    assert await apply(session, event("reaction", ours, reaction="❤️")) == 1
    meta = await session.scalar(select(Message.meta).where(Message.channel_message_id == ours))
    assert meta is not None and meta["reaction"] == "❤️"
    assert await apply(session, event("reaction", ours, reaction=None)) == 1
    session.expire_all()
    meta = await session.scalar(select(Message.meta).where(Message.channel_message_id == ours))
    assert meta is not None and "reaction" not in meta
    assert await apply(session, event("reaction", ours, reaction=None)) == 0


async def test_an_unsent_message_loses_its_texts_and_later_edits(session: AsyncSession) -> None:
    await record_inbound(session, messages=[said("m.1", "first")], correlation_id="c")
    await apply(session, event("edit", "m.1", text="second"))
    assert await apply(session, event("delete", "m.1")) == 1
    assert await apply(session, event("edit", "m.1", text="third")) == 0
    assert await apply(session, event("delete", "m.1")) == 0
    session.expire_all()
    message = await session.scalar(select(Message).where(Message.channel_message_id == "m.1"))
    assert message is not None
    assert (message.text, message.status, message.error) == (
        None,
        "ignored",
        "deleted by the customer",
    )
    assert "original_text" not in message.meta and message.meta["deleted_at"]


async def test_echoes_without_a_customer_or_for_nobody_known_change_nothing(
    session: AsyncSession,
) -> None:
    assert await apply(session, event("echo", "m.x", user_id=None, text="hello")) == 0
    assert await apply(session, event("read", "m.y", account="999")) == 0
    assert await apply(session, event("edit", "m.z", account="999", text="x")) == 0
    assert await session.scalar(select(func.count()).select_from(Message)) == 0
    # An echo alone makes its account (a person wrote to a customer first); reads never do.
    assert await session.scalar(select(func.count()).select_from(Account)) == 1


async def test_two_echoes_in_one_batch_hand_off_once(session: AsyncSession) -> None:
    assert (
        await apply(
            session,
            event("echo", "m.a", text="Ana here"),
            event("echo", "m.b", text="How can I help?"),
        )
        == 2
    )
    session.expire_all()
    conversation = await session.scalar(select(Conversation))
    assert conversation is not None
    assert conversation.mode == "human" and conversation.assignee == "echo"
    assert conversation.handed_off_at is not None and conversation.mode_changed_at is not None
    rows = await session.execute(
        select(Message.sender, Message.sequence_no, Message.text).order_by(Message.sequence_no)
    )
    assert list(rows) == [("operator", 1, "Ana here"), ("operator", 2, "How can I help?")]


async def test_a_persons_echo_owes_one_notice_and_withdraws_the_agents_queued_reply(
    session: AsyncSession,
) -> None:
    await answered(session, "m.in", [])  # the customer wrote; nothing sent yet
    (conversation_id,) = await session.scalars(select(Conversation.id))
    account_id = await session.scalar(select(Account.id))
    assert account_id is not None
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=[],
        replies=[Reply("an answer still queued")],
    )
    await session.commit()

    for mid in ("m.a", "m.b"):
        applied = await apply_events(
            session, events=[event("echo", mid, text=f"Ana {mid}")], correlation_id="c", notify=True
        )
        await session.commit()
        assert applied == 1
    notices = list(await session.execute(select(HandoffNotice.assignee, HandoffNotice.reason)))
    assert notices == [("echo", "answered from the channel's app")]  # the first echo only
    statuses = await session.execute(
        select(Message.sender, Message.status)
        .where(Message.direction == "out")
        .order_by(Message.id)
    )
    assert list(statuses) == [
        ("agent", "withdrawn"),
        ("operator", "sent"),
        ("operator", "sent"),
    ]
    assert await session.scalar(select(func.count()).select_from(Outbox)) == 0
