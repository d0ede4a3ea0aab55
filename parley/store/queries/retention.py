"""Retention (PARLEY_RETENTION_DAYS): conversations idle past the limit go, in small batches,
each its own short transaction, so that a sweep never holds SQLite's one writer for long nor
keeps a turn waiting.

A batch deletes the conversations' outbox rows, messages and Responses API records, then the
conversations, and queues their upstream objects (the OpenAI conversation, every stored response
they name) for deletion in the same transaction. A contact goes once no conversation of theirs
is left; the Responses API's users' contacts stay (they are the users'). Usage sums
(`usage_daily`) are aggregates and stay.

Safe on several workers at once: on PostgreSQL a batch takes its conversations with
`FOR UPDATE SKIP LOCKED`, so two sweeps take disjoint batches, and a conversation a writer is
adding to right now waits for the next sweep. Its idleness is judged on the row as locked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Delete, and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import (
    Account,
    Contact,
    Conversation,
    InboxEntry,
    Message,
    Outbox,
    ResponseRecord,
)
from parley.store.queries.upstream_deletions import UpstreamObject, objects_of, queue_deletions

API_CHANNEL = "api"


@dataclass(frozen=True, slots=True)
class Deleted:
    """What one deletion removed, table by table, and how many upstream objects it queued."""

    conversations: int = 0
    messages: int = 0
    outbox: int = 0
    responses: int = 0
    contacts: int = 0
    inbox: int = 0
    upstream: int = 0

    def __add__(self, other: Deleted) -> Deleted:
        return Deleted(
            conversations=self.conversations + other.conversations,
            messages=self.messages + other.messages,
            outbox=self.outbox + other.outbox,
            responses=self.responses + other.responses,
            contacts=self.contacts + other.contacts,
            inbox=self.inbox + other.inbox,
            upstream=self.upstream + other.upstream,
        )


def _idle(cutoff: datetime) -> ColumnElement[bool]:
    """No message in or out since `cutoff` (one that never had any: created before it)."""
    return or_(
        Conversation.last_message_at < cutoff,
        and_(Conversation.last_message_at.is_(None), Conversation.created_at < cutoff),
    )


async def expire_batch(session: AsyncSession, *, cutoff: datetime, limit: int) -> Deleted:
    """Delete up to `limit` conversations idle since `cutoff`, with everything theirs."""
    ids = list(
        await session.scalars(
            select(Conversation.id)
            .where(_idle(cutoff))
            .order_by(Conversation.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return Deleted()
    return await delete_conversations(session, conversation_ids=ids, reason="retention")


async def delete_conversations(
    session: AsyncSession, *, conversation_ids: Sequence[int], reason: str
) -> Deleted:
    """Delete these conversations (already locked by the caller on PostgreSQL) with their
    outbox rows, messages and response records; queue their upstream objects."""
    ids = list(conversation_ids)
    queued = await queue_deletions(
        session, objects=await _upstream_objects(session, ids), reason=reason
    )
    outbox = await _delete(session, delete(Outbox).where(Outbox.conversation_id.in_(ids)))
    messages = await _delete(session, delete(Message).where(Message.conversation_id.in_(ids)))
    responses = await _delete(
        session, delete(ResponseRecord).where(ResponseRecord.conversation_id.in_(ids))
    )
    conversations = await _delete(session, delete(Conversation).where(Conversation.id.in_(ids)))
    return Deleted(
        conversations=conversations,
        messages=messages,
        outbox=outbox,
        responses=responses,
        upstream=queued,
    )


async def _upstream_objects(session: AsyncSession, ids: list[int]) -> list[UpstreamObject]:
    """Every upstream object these conversations name: their OpenAI conversations, their last
    responses, the responses their messages came from and the Responses API's records."""
    conversations = list(
        await session.execute(
            select(Conversation.remote_conversation_id, Conversation.last_response_id).where(
                Conversation.id.in_(ids)
            )
        )
    )
    from_messages = await session.scalars(
        select(Message.response_id)
        .where(Message.conversation_id.in_(ids), Message.response_id.is_not(None))
        .distinct()
    )
    from_records = await session.scalars(
        select(ResponseRecord.upstream_response_id).where(
            ResponseRecord.conversation_id.in_(ids),
            ResponseRecord.upstream_response_id.is_not(None),
        )
    )
    return objects_of(
        remote_conversations=[remote for remote, _ in conversations],
        responses=[*(last for _, last in conversations), *from_messages, *from_records],
    )


async def expire_contacts(session: AsyncSession, *, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` contacts first seen before `cutoff` that have no conversation left
    (their last one expired); the Responses API users' own contacts stay.

    The rows are locked first (skipping those a writer holds), and only then is "no
    conversation" asked, in a statement of its own: on PostgreSQL it then sees a conversation
    a webhook just committed for that contact, so the contact is kept."""
    candidates = list(
        await session.scalars(
            select(Contact.id)
            .join(Account, Account.id == Contact.account_id)
            .where(
                Contact.created_at < cutoff,
                Account.channel != API_CHANNEL,
                ~exists().where(Conversation.contact_id == Contact.id),
            )
            .order_by(Contact.id)
            .limit(limit)
            .with_for_update(of=Contact, skip_locked=True)
        )
    )
    if not candidates:
        return 0
    return await _delete(
        session,
        delete(Contact).where(
            Contact.id.in_(candidates), ~exists().where(Conversation.contact_id == Contact.id)
        ),
    )


async def expire_inbox(session: AsyncSession, *, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` webhooks the filer could not read, received before `cutoff` (kept
    for audit until then; they hold what the customer sent)."""
    ids = list(
        await session.scalars(
            select(InboxEntry.id)
            .where(InboxEntry.failed_at.is_not(None), InboxEntry.received_at < cutoff)
            .order_by(InboxEntry.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return 0
    return await _delete(session, delete(InboxEntry).where(InboxEntry.id.in_(ids)))


async def _delete(session: AsyncSession, statement: Delete) -> int:
    result = await session.execute(statement)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
