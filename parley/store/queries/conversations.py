"""Conversations and contacts as an operator reads them: listed newest activity first with
filters, search and an opaque cursor, and a conversation's transcript with what each message
cost.

The listing's order is (last activity, id) descending, indexed (`ix_conversations_activity`);
the cursor is the last row's pair, so a page never repeats or skips a row that stays put,
whatever is inserted meanwhile (a conversation that gets a new message moves to the top: it is
met again on a fresh first page, not on later ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from parley.store.models import Account, Contact, Conversation, Message

PREVIEW_CHARS = 120
T = TypeVar("T")


class CursorInvalid(ValueError):
    """A cursor that this listing did not hand out."""


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    channel: str | None = None
    account_id: int | None = None
    contact_id: int | None = None
    mode: str | None = None
    waiting: bool | None = None
    failed: bool | None = None
    since: datetime | None = None
    """Only conversations active at or after this time."""
    q: str | None = None
    """Part of the contact's name, username, phone or channel id (case-insensitive)."""


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    channel: str
    status: str
    mode: str
    assignee: str | None
    mode_changed_at: datetime | None
    mode_reason: str | None
    account_id: int
    account_external_id: str
    account_name: str | None
    contact_id: int
    contact_external_id: str
    contact_name: str | None
    contact_phone: str | None
    contact_username: str | None
    last_message_at: datetime | None
    last_message_preview: str | None
    waiting: bool
    """In human mode with customer messages no person has answered yet."""
    failed: bool
    """Some message failed: an inbound one got the fallback, or a reply was not delivered."""
    message_count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    id: int
    sequence_no: int
    direction: str
    sender: str
    kind: str
    text: str | None
    status: str
    error: str | None
    attempts: int
    channel_message_id: str | None
    reply_to_id: int | None
    operator: str | None
    response_id: str | None
    model: str | None
    input_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: Decimal | None
    latency_ms: int | None
    prompt_version_id: int | None
    prompt: dict[str, Any] | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime


# --- cursors ----------------------------------------------------------------------------------


def encode_cursor(*parts: object) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise CursorInvalid("not a cursor this listing gave") from exc
    if not isinstance(parts, list):
        raise CursorInvalid("not a cursor this listing gave")
    return parts


def _activity_cursor(cursor: str) -> tuple[datetime, int]:
    parts = _decode(cursor)
    try:
        moment, row_id = parts
        when = datetime.fromisoformat(moment)
    except (TypeError, ValueError) as exc:
        raise CursorInvalid("not a cursor this listing gave") from exc
    if not isinstance(row_id, int) or isinstance(row_id, bool) or when.tzinfo is None:
        raise CursorInvalid("not a cursor this listing gave")
    return when, row_id


def _id_cursor(cursor: str) -> int:
    parts = _decode(cursor)
    if len(parts) != 1 or not isinstance(parts[0], int) or isinstance(parts[0], bool):
        raise CursorInvalid("not a cursor this listing gave")
    return int(parts[0])


# --- conversations ------------------------------------------------------------------------------


def _waiting() -> ColumnElement[bool]:
    return and_(
        Conversation.mode == "human",
        exists().where(
            Message.conversation_id == Conversation.id,
            Message.direction == "in",
            Message.status == "received",
        ),
    )


def _failed() -> ColumnElement[bool]:
    return exists().where(Message.conversation_id == Conversation.id, Message.status == "failed")


def _contact_matches(q: str) -> ColumnElement[bool]:
    return or_(
        Contact.name.icontains(q, autoescape=True),
        Contact.username.icontains(q, autoescape=True),
        Contact.phone.icontains(q, autoescape=True),
        Contact.external_id.icontains(q, autoescape=True),
        Contact.user_id.icontains(q, autoescape=True),
    )


def _rows_query() -> Select[Any]:
    last_text = (
        select(Message.text)
        .where(Message.conversation_id == Conversation.id, Message.direction != "internal")
        .order_by(Message.sequence_no.desc())
        .limit(1)
        .scalar_subquery()
    )
    count = (
        select(func.count(Message.id))
        .where(Message.conversation_id == Conversation.id)
        .scalar_subquery()
    )
    return (
        select(
            Conversation,
            Account.external_id,
            Account.name,
            Contact,
            last_text.label("last_text"),
            _waiting().label("waiting"),
            _failed().label("failed"),
            count.label("message_count"),
        )
        .join(Account, Account.id == Conversation.account_id)
        .join(Contact, Contact.id == Conversation.contact_id)
    )


def _filtered(query: Select[Any], where: ConversationFilter) -> Select[Any]:
    if where.channel is not None:
        query = query.where(Conversation.channel == where.channel)
    if where.account_id is not None:
        query = query.where(Conversation.account_id == where.account_id)
    if where.contact_id is not None:
        query = query.where(Conversation.contact_id == where.contact_id)
    if where.mode is not None:
        query = query.where(Conversation.mode == where.mode)
    if where.since is not None:
        query = query.where(Conversation.last_message_at >= where.since)
    if where.waiting is not None:
        query = query.where(_waiting() if where.waiting else ~_waiting())
    if where.failed is not None:
        query = query.where(_failed() if where.failed else ~_failed())
    if where.q:
        query = query.where(_contact_matches(where.q))
    return query


def _row(found: Any) -> ConversationRow:
    conversation: Conversation = found[0]
    contact: Contact = found[3]
    text = found.last_text
    preview = (
        text if text is None or len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    )
    return ConversationRow(
        id=conversation.id,
        channel=conversation.channel,
        status=conversation.status,
        mode=conversation.mode,
        assignee=conversation.assignee,
        mode_changed_at=conversation.mode_changed_at,
        mode_reason=conversation.mode_reason,
        account_id=conversation.account_id,
        account_external_id=found[1],
        account_name=found[2],
        contact_id=contact.id,
        contact_external_id=contact.external_id,
        contact_name=contact.name,
        contact_phone=contact.phone,
        contact_username=contact.username,
        last_message_at=conversation.last_message_at,
        last_message_preview=preview,
        waiting=bool(found.waiting),
        failed=bool(found.failed),
        message_count=int(found.message_count or 0),
        created_at=conversation.created_at,
    )


async def list_conversations(
    session: AsyncSession,
    *,
    where: ConversationFilter,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ConversationRow]:
    """A page of conversations, latest activity first.

    Raises:
        CursorInvalid: `cursor` is not one this listing gave.
    """
    query = _filtered(_rows_query(), where)
    if cursor is not None:
        moment, row_id = _activity_cursor(cursor)
        query = query.where(
            or_(
                Conversation.last_message_at < moment,
                and_(Conversation.last_message_at == moment, Conversation.id < row_id),
            )
        )
    query = query.order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
    found = [_row(r) for r in (await session.execute(query.limit(limit + 1))).all()]
    items = found[:limit]
    more = len(found) > limit
    last = items[-1] if items else None
    next_cursor = encode_cursor(last.last_message_at, last.id) if more and last else None
    return Page(items, next_cursor)


async def conversation_row(
    session: AsyncSession, *, conversation_id: int
) -> ConversationRow | None:
    found = (await session.execute(_rows_query().where(Conversation.id == conversation_id))).first()
    return _row(found) if found is not None else None


async def transcript(
    session: AsyncSession, *, conversation_id: int, after: int = 0, limit: int = 200
) -> list[TranscriptMessage]:
    """The conversation's messages in order from sequence number `after` (exclusive),
    internal ones (tool calls) included."""
    rows = await session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.sequence_no > after)
        .order_by(Message.sequence_no)
        .limit(limit)
    )
    return [_transcript_message(m) for m in rows]


async def messages_by_id(session: AsyncSession, *, ids: list[int]) -> list[TranscriptMessage]:
    rows = await session.scalars(
        select(Message).where(Message.id.in_(ids)).order_by(Message.sequence_no)
    )
    return [_transcript_message(m) for m in rows]


def sequence_cursor(cursor: str) -> int:
    """The sequence number a transcript's cursor stands for.

    Raises:
        CursorInvalid: not a cursor a transcript gave.
    """
    return _id_cursor(cursor)


def _transcript_message(m: Message) -> TranscriptMessage:
    meta = m.meta or {}
    prompt = meta.get("prompt")
    return TranscriptMessage(
        id=m.id,
        sequence_no=m.sequence_no,
        direction=m.direction,
        sender=m.sender,
        kind=m.kind,
        text=m.text,
        status=m.status,
        error=m.error,
        attempts=m.attempts,
        channel_message_id=m.channel_message_id,
        reply_to_id=m.reply_to_id,
        operator=meta.get("operator"),
        response_id=m.response_id,
        model=m.model,
        input_tokens=m.input_tokens,
        cached_tokens=m.cached_tokens,
        output_tokens=m.output_tokens,
        reasoning_tokens=m.reasoning_tokens,
        cost_usd=m.cost_usd,
        latency_ms=m.latency_ms,
        prompt_version_id=m.prompt_version_id,
        prompt=prompt if isinstance(prompt, dict) else None,
        correlation_id=meta.get("correlation_id"),
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


# --- contacts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactRow:
    id: int
    account_id: int
    channel: str
    external_id: str
    user_id: str | None
    phone: str | None
    name: str | None
    username: str | None
    conversation_count: int
    created_at: datetime
    updated_at: datetime


def _contacts_query() -> Select[Any]:
    count = (
        select(func.count(Conversation.id))
        .where(Conversation.contact_id == Contact.id)
        .scalar_subquery()
    )
    return select(Contact, Account.channel, count.label("conversations")).join(
        Account, Account.id == Contact.account_id
    )


def _contact_row(found: Any) -> ContactRow:
    contact: Contact = found[0]
    return ContactRow(
        id=contact.id,
        account_id=contact.account_id,
        channel=found[1],
        external_id=contact.external_id,
        user_id=contact.user_id,
        phone=contact.phone,
        name=contact.name,
        username=contact.username,
        conversation_count=int(found.conversations or 0),
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


async def list_contacts(
    session: AsyncSession,
    *,
    q: str | None = None,
    account_id: int | None = None,
    channel: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ContactRow]:
    """Contacts, newest first, optionally matching `q` (name, username, phone, channel id).

    Raises:
        CursorInvalid: `cursor` is not one this listing gave.
    """
    query = _contacts_query()
    if q:
        query = query.where(_contact_matches(q))
    if account_id is not None:
        query = query.where(Contact.account_id == account_id)
    if channel is not None:
        query = query.where(Account.channel == channel)
    if cursor is not None:
        query = query.where(Contact.id < _id_cursor(cursor))
    found = [
        _contact_row(r)
        for r in (await session.execute(query.order_by(Contact.id.desc()).limit(limit + 1))).all()
    ]
    items = found[:limit]
    more = len(found) > limit
    return Page(items, encode_cursor(items[-1].id) if more and items else None)


async def contact_row(session: AsyncSession, *, contact_id: int) -> ContactRow | None:
    found = (await session.execute(_contacts_query().where(Contact.id == contact_id))).first()
    return _contact_row(found) if found is not None else None


# --- change markers -----------------------------------------------------------------------------


async def inbox_version(session: AsyncSession) -> str:
    """A marker that changes when the inbox may show something new: a message stored, a
    conversation's activity or mode changed, a message failed. Each part reads an index (the
    primary key, `ix_conversations_activity`, `ix_conversations_mode`,
    `ix_messages_status_created`), so a page that polls it costs little while nothing
    happens, and every process sees the same marker."""
    found = (
        await session.execute(
            select(
                select(func.max(Message.id)).scalar_subquery(),
                select(func.max(Conversation.last_message_at)).scalar_subquery(),
                select(func.max(Conversation.mode_changed_at)).scalar_subquery(),
                select(func.count()).where(Message.status == "failed").scalar_subquery(),
            )
        )
    ).one()
    return _marker(found)


async def conversation_version(session: AsyncSession, *, conversation_id: int) -> str:
    """A marker that changes when the conversation's page may show something new: a message
    stored or its status changed, the mode changed."""
    found = (
        await session.execute(
            select(
                func.count(Message.id),
                func.max(Message.updated_at),
                select(Conversation.mode)
                .where(Conversation.id == conversation_id)
                .scalar_subquery(),
                select(Conversation.mode_changed_at)
                .where(Conversation.id == conversation_id)
                .scalar_subquery(),
            ).where(Message.conversation_id == conversation_id)
        )
    ).one()
    return _marker(found)


def _marker(parts: Any) -> str:
    raw = "|".join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
