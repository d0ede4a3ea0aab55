"""Filing the channel's status reports for Parley's sent messages, a batch at a time: through a
session, and on SQLite sent directly, guarded by the messages as they were read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import StatusUpdate
from parley.store.direct import DirectWrites, Stale
from parley.store.models import Account, Message, Outbox
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import mark_sent
from parley.store.queries.statuses import advance_statuses_directly, apply_statuses
from parley.store.queries.turns import Reply, record_turn
from tests.factories import PHONE_NUMBER_ID, inbound_text, last_reply_ids

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def sent(session: AsyncSession, *replies: str) -> list[str]:
    """A customer's message answered with `replies`, each sent; returns their channel ids."""
    (conversation_id,) = await record_inbound(
        session, messages=[inbound_text("wamid.in", phone="34600")], correlation_id="c"
    )
    account_id = await session.scalar(select(Account.id))
    inbound = await session.scalar(select(Message.id).where(Message.direction == "in"))
    assert account_id is not None and inbound is not None
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=[inbound],
        replies=[Reply(text) for text in replies],
    )
    ids = await last_reply_ids(session, conversation_id, len(replies))
    for message_id, mid in zip(ids, replies, strict=True):
        await mark_sent(session, outbox_id=-1, message_id=message_id, channel_message_id=mid)
    await session.commit()
    return list(replies)


def report(mid: str, status: str, minutes: int, **fields: object) -> StatusUpdate:
    return StatusUpdate(
        channel="whatsapp",
        account_external_id=str(fields.pop("account", PHONE_NUMBER_ID)),
        channel_message_id=mid,
        status=status,
        timestamp=T0 + timedelta(minutes=minutes),
        errors=tuple(fields.pop("errors", ())),  # type: ignore[arg-type]
    )


async def outbound(session: AsyncSession) -> dict[str, tuple[str, str | None, dict[str, object]]]:
    rows = await session.execute(
        select(Message.channel_message_id, Message.status, Message.error, Message.meta).where(
            Message.direction == "out"
        )
    )
    return {str(mid): (status, error, meta) for mid, status, error, meta in rows}


async def apply(
    session: AsyncSession, direct: DirectWrites | None, statuses: list[StatusUpdate]
) -> int:
    """The reports filed and committed, through the session or directly."""
    if direct is None:
        moved = await apply_statuses(session, statuses=statuses)
        await session.commit()
        return moved
    assert not session.in_transaction()  # the line is free for the direct trips
    flags, steps = await advance_statuses_directly(direct, statuses=statuses)
    await direct.commit(steps)
    return sum(flags)


async def test_reports_out_of_order_in_one_batch_only_move_forward(
    session: AsyncSession, direct: DirectWrites | None
) -> None:
    await sent(session, "wamid.a", "wamid.b")

    moved = await apply(
        session,
        direct,
        [
            report("wamid.a", "read", 3),
            report("wamid.a", "delivered", 2),
            report("wamid.b", "delivered", 2),
            report("wamid.a", "sent", 1),
            report("wamid.b", "read", 4),
            report("wamid.b", "read", 5),  # Meta's re-delivery
            report("wamid.b", "read", 5, account="999"),  # an account Parley never saw
            report("wamid.other-tool", "delivered", 1),
            report("wamid.in", "read", 1),  # the customer's own message
        ],
    )

    assert moved == 3
    messages = await outbound(session)
    assert messages["wamid.a"][0] == "read"
    assert messages["wamid.a"][2]["read_at"] == (T0 + timedelta(minutes=3)).isoformat()
    assert "delivered_at" not in messages["wamid.a"][2]
    assert messages["wamid.b"][0] == "read"
    assert messages["wamid.b"][2]["delivered_at"] == (T0 + timedelta(minutes=2)).isoformat()
    assert messages["wamid.b"][2]["read_at"] == (T0 + timedelta(minutes=4)).isoformat()


async def test_unknown_ids_are_ignored_next_to_known_ones(session: AsyncSession) -> None:
    await sent(session, "wamid.a", "wamid.b")

    moved = await apply_statuses(
        session,
        statuses=[
            report("wamid.other-tool", "delivered", 1),
            report("wamid.a", "delivered", 1),
            report("wamid.b", "delivered", 1, account="999"),  # an account Parley never saw
            report("wamid.in", "read", 1),  # the customer's own message
            report("wamid.b", "failed", 2, errors=[{"code": 131047, "title": "Re-engagement"}]),
        ],
    )
    await session.commit()

    assert moved == 2
    messages = await outbound(session)
    assert messages["wamid.a"][0] == "delivered"
    assert messages["wamid.b"][:2] == ("failed", "131047: Re-engagement")
    assert len(messages["wamid.b"][2]["reported_failures"]) == 1  # type: ignore[arg-type]
    queued = await session.scalar(
        select(Outbox.attempts)
        .join(Message, Message.id == Outbox.message_id)
        .where(Message.channel_message_id == "wamid.b")
    )
    assert queued == 0
    inbound = await session.scalar(select(Message.status).where(Message.direction == "in"))
    assert inbound == "answered"
    assert await session.scalar(select(Account.id).where(Account.external_id == "999")) is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_message_changed_after_it_was_read_is_not_moved_over(
    session: AsyncSession,
) -> None:
    await sent(session, "wamid.a", "wamid.b")
    direct = DirectWrites.of(session.bind)  # type: ignore[arg-type]
    assert direct is not None
    moved, steps = await advance_statuses_directly(
        direct, statuses=[report("wamid.a", "delivered", 1), report("wamid.b", "read", 2)]
    )
    assert moved == [True, True]
    # Another transaction writes to one of them before the moves are committed.
    await session.execute(
        update(Message).where(Message.channel_message_id == "wamid.b").values(meta={"k": 1})
    )
    await session.commit()

    with pytest.raises(Stale):
        await direct.commit(steps)

    messages = await outbound(session)
    assert messages["wamid.a"] == ("sent", None, {})  # nothing of the refused transaction
    assert messages["wamid.b"] == ("sent", None, {"k": 1})
    await session.commit()  # the line free again
    # Read again, they move.
    moved, steps = await advance_statuses_directly(direct, statuses=[report("wamid.b", "read", 2)])
    await direct.commit(steps)
    assert (await outbound(session))["wamid.b"][0] == "read"
