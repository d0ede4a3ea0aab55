"""Erasing one customer everywhere (`parley contacts erase`, `DELETE /admin/contacts/{id}`).

In one transaction: the contact's conversations with their messages, outbox rows and response
records; the webhooks still in the inbox that name them; the contact itself. Their OpenAI
conversations and stored responses are queued for deletion upstream in the same transaction
(`upstream_deletions`), so a down upstream delays them and loses none. What stays: the usage
sums (anonymous aggregates per day, account and model) and an `erasures` record of who asked,
when and how much went, holding Parley's own ids and a keyed hash of the customer's channel
id, nothing personal.

A turn running for that customer meanwhile finds its conversation gone when it stores its
answer (`ConversationGone`) and drops it; the contact is not made again unless the customer
writes again.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import AlreadyErased, ContactNotFound, ErasureRefused
from parley.store.models import Account, Contact, Conversation, Erasure, InboxEntry, utcnow
from parley.store.queries.retention import API_CHANNEL, Deleted, delete_conversations

INBOX_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What one erasure removed: the audit record as the CLI and the admin API show it."""

    id: int
    contact_id: int
    account_id: int
    channel: str
    erased_at: datetime
    requested_by: str
    conversations: int
    messages: int
    outbox: int
    responses: int
    inbox: int
    upstream: int
    """Upstream objects (OpenAI conversations, stored responses) queued for deletion."""


def channel_id_hash(key: bytes, *, channel: str, customer_id: str) -> str:
    """The keyed one-way hash an erasure keeps of the customer's id on the channel."""
    return hmac.new(key, f"{channel}:{customer_id}".encode(), hashlib.sha256).hexdigest()


def report_of(erasure: Erasure) -> ErasureReport:
    return ErasureReport(
        id=erasure.id,
        contact_id=erasure.contact_id,
        account_id=erasure.account_id,
        channel=erasure.channel,
        erased_at=erasure.erased_at,
        requested_by=erasure.requested_by,
        conversations=erasure.conversations,
        messages=erasure.messages,
        outbox=erasure.outbox,
        responses=erasure.responses,
        inbox=erasure.inbox,
        upstream=erasure.upstream,
    )


async def find_contacts(
    session: AsyncSession,
    *,
    channel: str,
    customer_id: str,
    account_id: int | None = None,
) -> list[Contact]:
    """The channel's contacts known by this id (their key, user id or phone), on every account
    of the channel unless `account_id` narrows it: one person writing to several numbers."""
    query = (
        select(Contact)
        .join(Account, Account.id == Contact.account_id)
        .where(
            Account.channel == channel,
            or_(
                Contact.external_id == customer_id,
                Contact.user_id == customer_id,
                Contact.phone == customer_id,
            ),
        )
        .order_by(Contact.id)
    )
    if account_id is not None:
        query = query.where(Contact.account_id == account_id)
    return list(await session.scalars(query))


async def earlier_erasures(
    session: AsyncSession, *, contact_id: int | None = None, hashed: str | None = None
) -> list[ErasureReport]:
    """Erasures of this contact id, or of a customer whose channel id hashes to `hashed`."""
    conditions = []
    if contact_id is not None:
        conditions.append(Erasure.contact_id == contact_id)
    if hashed is not None:
        conditions.append(Erasure.channel_id_hash == hashed)
    if not conditions:
        return []
    rows = await session.scalars(select(Erasure).where(or_(*conditions)).order_by(Erasure.id))
    return [report_of(row) for row in rows]


async def recent_erasures(session: AsyncSession, *, limit: int = 100) -> list[ErasureReport]:
    rows = await session.scalars(select(Erasure).order_by(Erasure.id.desc()).limit(limit))
    return [report_of(row) for row in rows]


async def erase_contact(
    session: AsyncSession, *, contact_id: int, requested_by: str, key: bytes
) -> ErasureReport:
    """Erase the contact and everything of theirs; the caller commits.

    Raises:
        AlreadyErased: the contact went in an earlier erasure.
        ContactNotFound: there never was such a contact (or retention removed it).
        ErasureRefused: it is a Responses API user's own contact.
    """
    # Locked first, as the filer locks a contact before its conversations: a webhook for
    # this customer waits, and then finds no contact.
    contact = await session.scalar(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    )
    if contact is None:
        earlier = await earlier_erasures(session, contact_id=contact_id)
        if earlier:
            raise AlreadyErased(
                f"contact {contact_id} was already erased", erased_at=earlier[0].erased_at
            )
        raise ContactNotFound(f"no contact {contact_id}")
    account = await session.get(Account, contact.account_id)
    assert account is not None
    if account.channel == API_CHANNEL:
        raise ErasureRefused(
            f"contact {contact_id} is a Responses API user's; delete the user instead"
        )
    conversation_ids = list(
        await session.scalars(
            select(Conversation.id)
            .where(Conversation.contact_id == contact.id)
            .order_by(Conversation.id)
            .with_for_update()
        )
    )
    deleted = Deleted()
    if conversation_ids:
        deleted = await delete_conversations(
            session, conversation_ids=conversation_ids, reason="erasure"
        )
    inbox = await _delete_inbox_naming(session, _identifiers(contact))
    await session.execute(delete(Contact).where(Contact.id == contact.id))
    erasure = Erasure(
        erased_at=utcnow(),
        requested_by=requested_by,
        contact_id=contact.id,
        account_id=account.id,
        channel=account.channel,
        channel_id_hash=channel_id_hash(
            key, channel=account.channel, customer_id=contact.external_id
        ),
        conversations=deleted.conversations,
        messages=deleted.messages,
        outbox=deleted.outbox,
        responses=deleted.responses,
        inbox=inbox,
        upstream=deleted.upstream,
    )
    session.add(erasure)
    await session.flush()
    return report_of(erasure)


def _identifiers(contact: Contact) -> list[bytes]:
    """How a webhook body names the customer: each id as a JSON string, quotes included, so
    that a short id does not match inside a longer one."""
    ids = {contact.external_id, contact.user_id, contact.phone}
    return [f'"{value}"'.encode() for value in ids if value]


async def _delete_inbox_naming(session: AsyncSession, needles: list[bytes]) -> int:
    """Delete the inbox rows (waiting, or kept as unreadable) whose body names the customer:
    filing one later would bring their messages back. The inbox is drained as it fills, so
    this reads few rows; it reads them in chunks all the same."""
    if not needles:
        return 0
    doomed: list[int] = []
    after = 0
    while True:
        rows = list(
            await session.execute(
                select(InboxEntry.id, InboxEntry.body)
                .where(InboxEntry.id > after)
                .order_by(InboxEntry.id)
                .limit(INBOX_CHUNK)
            )
        )
        doomed += [row_id for row_id, body in rows if any(n in body for n in needles)]
        if len(rows) < INBOX_CHUNK:
            break
        after = rows[-1][0]
    if doomed:
        await session.execute(delete(InboxEntry).where(InboxEntry.id.in_(doomed)))
    return len(doomed)
