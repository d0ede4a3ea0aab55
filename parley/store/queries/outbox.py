"""The outbox: replies waiting to be sent, claimed by delivery one conversation head at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Account, Contact, Conversation, Message, Outbox, utcnow


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row with everything a channel needs to send it."""

    outbox_id: int
    attempts: int
    message: Message
    account: Account
    contact: Contact
    reply_to_channel_id: str | None


async def conversations_with_due_heads(
    session: AsyncSession, *, limit: int, exclude: set[int]
) -> list[int]:
    """Conversations whose oldest outbox row is due and not held by another sender.

    Only the head of each conversation counts, so that a reply in backoff holds back the ones
    after it and the customer reads them in order.
    """
    now = utcnow()
    heads = (
        select(Outbox.conversation_id, func.min(Outbox.id).label("head"))
        .group_by(Outbox.conversation_id)
        .subquery()
    )
    query = (
        select(Outbox.conversation_id)
        .join(heads, heads.c.head == Outbox.id)
        .where(
            Outbox.next_attempt_at <= now,
            or_(Outbox.locked_until.is_(None), Outbox.locked_until < now),
        )
        .order_by(Outbox.id)
        .limit(limit + len(exclude))
    )
    ids = [cid for cid in await session.scalars(query) if cid not in exclude]
    return ids[:limit]


async def claim_head(
    session: AsyncSession, *, conversation_id: int, hold: timedelta
) -> Delivery | None:
    """Take the conversation's oldest outbox row if it is due and free; hold it for `hold`."""
    now = utcnow()
    row = await session.scalar(
        select(Outbox).where(Outbox.conversation_id == conversation_id).order_by(Outbox.id).limit(1)
    )
    if row is None or row.next_attempt_at > now:
        return None
    if row.locked_until is not None and row.locked_until >= now:
        return None
    claimed = await session.execute(
        update(Outbox)
        .where(
            Outbox.id == row.id,
            or_(Outbox.locked_until.is_(None), Outbox.locked_until < now),
        )
        .values(locked_until=now + hold)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return await _delivery(session, row)


async def _delivery(session: AsyncSession, row: Outbox) -> Delivery:
    message, account, contact = (
        await session.execute(
            select(Message, Account, Contact)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .join(Account, Account.id == Message.account_id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .where(Message.id == row.message_id)
        )
    ).one()
    reply_to = None
    if message.reply_to_id is not None:
        reply_to = await session.scalar(
            select(Message.channel_message_id).where(Message.id == message.reply_to_id)
        )
    return Delivery(row.id, row.attempts, message, account, contact, reply_to)


async def mark_sent(
    session: AsyncSession, *, outbox_id: int, message_id: int, channel_message_id: str | None
) -> None:
    await session.execute(delete(Outbox).where(Outbox.id == outbox_id))
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "queued")
        .values(status="sent", channel_message_id=channel_message_id, updated_at=utcnow())
    )


async def mark_failed(
    session: AsyncSession, *, outbox_id: int, message_id: int, error: str
) -> None:
    await session.execute(delete(Outbox).where(Outbox.id == outbox_id))
    await session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status="failed", error=error, updated_at=utcnow())
    )


async def schedule_retry(
    session: AsyncSession, *, outbox_id: int, at: datetime, error: str
) -> None:
    await session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id)
        .values(attempts=Outbox.attempts + 1, next_attempt_at=at, locked_until=None)
    )
    message_id = select(Outbox.message_id).where(Outbox.id == outbox_id).scalar_subquery()
    await session.execute(
        update(Message).where(Message.id == message_id).values(error=error, updated_at=utcnow())
    )


async def next_due_at(session: AsyncSession) -> datetime | None:
    """When the earliest outbox row falls due, for delivery to sleep until then."""
    return await session.scalar(select(func.min(Outbox.next_attempt_at)))


async def release_holds(session: AsyncSession) -> None:
    """Free every held outbox row. Only for the embedded mode, where one process holds them
    all: after a crash its rows would otherwise wait out their hold before being sent."""
    await session.execute(update(Outbox).values(locked_until=None))
