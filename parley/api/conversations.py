"""The admin API of conversations and contacts: list, search and read them, and let a person
take a conversation over, answer in it and hand it back (admin bearer token).

A reply is refused (409) while the agent has the conversation: an operator takes it over first
(`POST …/takeover`), so that the agent and a person never answer the same messages. Taking
over withdraws the agent's replies not yet sent; handing back closes what the customer wrote
that nobody answered as `ignored`, unless `answer_pending` asks the agent to answer it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from parley import operator
from parley.api.admin import AdminDep, require_admin
from parley.api.errors import ADMIN_ERRORS
from parley.deps import RowId, RuntimeDep, SessionDep
from parley.errors import ConversationModeConflict, ConversationNotFound
from parley.store.queries import conversations as queries
from parley.store.queries.conversations import ConversationFilter, CursorInvalid
from parley.store.queries.handoff import ModeChange

router = APIRouter(
    prefix="/admin",
    tags=["conversations"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)

Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=512)]
OperatorName = Annotated[str | None, Field(default=None, min_length=1, max_length=128)]


class ConversationPublic(BaseModel):
    id: int
    channel: str
    status: str
    mode: Literal["agent", "human"]
    assignee: str | None
    """Who set the mode: an operator's name, ``agent`` (the handoff tool), ``echo`` (a person
    wrote from the channel's app), ``idle`` (handed back after the idle time)."""
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
    failed: bool
    message_count: int
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)


class ConversationPage(BaseModel):
    data: list[ConversationPublic]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last."""


class TranscriptMessagePublic(BaseModel):
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

    model_config = ConfigDict(from_attributes=True)


class TranscriptPage(BaseModel):
    conversation_id: int
    data: list[TranscriptMessagePublic]
    next_cursor: str | None


class ContactPublic(BaseModel):
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

    model_config = ConfigDict(from_attributes=True)


class ContactPage(BaseModel):
    data: list[ContactPublic]
    next_cursor: str | None


class ContactDetail(ContactPublic):
    conversations: list[ConversationPublic]


class TakeOver(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: OperatorName = None
    """Who takes it (default: the token's user)."""
    reason: str | None = Field(default=None, max_length=255)


class OperatorReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    operator: OperatorName = None


class HandBack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_pending: bool = False
    """Have the agent answer what the customer wrote that nobody answered (default: those
    messages are closed as `ignored`; the agent answers what comes next)."""
    operator: OperatorName = None


class ModeChangePublic(BaseModel):
    conversation: ConversationPublic
    changed: bool
    withdrawn: int
    """The agent's replies taken out of the outbox before they were sent."""
    pending: int
    """Customer messages nobody had answered at the hand-back."""


class ReplyAccepted(BaseModel):
    conversation_id: int
    messages: list[TranscriptMessagePublic]
    """The reply as the channel sends it (a long text is split), queued for delivery."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConversationNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ConversationModeConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except CursorInvalid as exc:
        raise HTTPException(422, f"cursor: {exc}") from exc


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


async def _row(session: SessionDep, conversation_id: int) -> ConversationPublic:
    row = await queries.conversation_row(session, conversation_id=conversation_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id}")
    return ConversationPublic.model_validate(row)


@router.get("/conversations")
async def list_conversations(
    session: SessionDep,
    channel: str | None = None,
    account_id: RowId | None = None,
    mode: Literal["agent", "human"] | None = None,
    waiting: bool | None = None,
    failed: bool | None = None,
    since: datetime | None = None,
    q: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ConversationPage:
    """Conversations, latest activity first. `waiting=true`: in human mode with customer
    messages nobody answered yet; `q` searches the contact's name, username, phone and id."""
    where = ConversationFilter(
        channel=channel,
        account_id=account_id,
        mode=mode,
        waiting=waiting,
        failed=failed,
        since=_utc(since),
        q=q or None,
    )
    with _errors():
        page = await queries.list_conversations(session, where=where, limit=limit, cursor=cursor)
    return ConversationPage(
        data=[ConversationPublic.model_validate(r) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/conversations/{conversation_id}")
async def show_conversation(conversation_id: RowId, session: SessionDep) -> ConversationPublic:
    return await _row(session, conversation_id)


@router.get("/conversations/{conversation_id}/messages")
async def list_messages(
    conversation_id: RowId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Cursor = None,
) -> TranscriptPage:
    """The transcript in order, with each message's status, tokens, cost, latency, prompt
    version and correlation id (tool calls too: direction ``internal``)."""
    await _row(session, conversation_id)
    with _errors():
        after = queries.sequence_cursor(cursor) if cursor is not None else 0
    rows = await queries.transcript(
        session, conversation_id=conversation_id, after=after, limit=limit + 1
    )
    items = rows[:limit]
    more = len(rows) > limit
    return TranscriptPage(
        conversation_id=conversation_id,
        data=[TranscriptMessagePublic.model_validate(m) for m in items],
        next_cursor=queries.encode_cursor(items[-1].sequence_no) if more and items else None,
    )


@router.post("/conversations/{conversation_id}/takeover")
async def take_over(
    conversation_id: RowId,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    body: TakeOver | None = None,
) -> ModeChangePublic:
    """A person answers from now on: the agent stops, and its replies not yet sent are
    withdrawn. Taking over a conversation a person already has makes the caller its assignee."""
    body = body or TakeOver()
    with _errors():
        change = await operator.take_over(
            session,
            runtime,
            conversation_id=conversation_id,
            operator=body.operator or admin,
            reason=body.reason or "taken over by an operator",
        )
    return await _change(session, change)


@router.post("/conversations/{conversation_id}/messages", status_code=status.HTTP_202_ACCEPTED)
async def reply(
    conversation_id: RowId,
    body: OperatorReply,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> ReplyAccepted:
    """Answer the customer as a person: queued in the outbox and sent with the channel's rules
    (split within its limit, formatted, tagged HUMAN_AGENT where its window needs it). 409
    while the agent has the conversation (take it over first)."""
    conversation = await _row(session, conversation_id)
    with _errors():
        ids = await operator.reply(
            session,
            runtime,
            conversation_id=conversation_id,
            channel=conversation.channel,
            operator=body.operator or admin,
            text=body.text,
        )
    if not ids:
        raise HTTPException(422, "text: nothing to send")
    stored = await queries.messages_by_id(session, ids=ids)
    return ReplyAccepted(
        conversation_id=conversation_id,
        messages=[TranscriptMessagePublic.model_validate(m) for m in stored],
    )


@router.post("/conversations/{conversation_id}/handback")
async def hand_back_to_agent(
    conversation_id: RowId,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    body: HandBack | None = None,
) -> ModeChangePublic:
    """The agent answers again, from the customer's next message on (or, with
    `answer_pending`, what is unanswered now too). 409 if the agent has it already."""
    body = body or HandBack()
    with _errors():
        change = await operator.give_back(
            session,
            runtime,
            conversation_id=conversation_id,
            operator=body.operator or admin,
            answer_pending=body.answer_pending,
        )
    return await _change(session, change)


async def _change(session: SessionDep, change: ModeChange) -> ModeChangePublic:
    return ModeChangePublic(
        conversation=await _row(session, change.conversation.id),
        changed=change.changed,
        withdrawn=change.withdrawn,
        pending=change.pending,
    )


# --- contacts -----------------------------------------------------------------------------------


@router.get("/contacts")
async def list_contacts(
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=255)] = None,
    account_id: RowId | None = None,
    channel: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ContactPage:
    """Contacts, newest first; `q` searches name, username, phone and the channel's ids."""
    with _errors():
        page = await queries.list_contacts(
            session, q=q or None, account_id=account_id, channel=channel, limit=limit, cursor=cursor
        )
    return ContactPage(
        data=[ContactPublic.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/contacts/{contact_id}")
async def show_contact(contact_id: RowId, session: SessionDep) -> ContactDetail:
    """The contact with their conversations (the latest 50)."""
    contact = await queries.contact_row(session, contact_id=contact_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no contact {contact_id}")
    page = await queries.list_conversations(
        session, where=ConversationFilter(contact_id=contact_id), limit=50
    )
    return ContactDetail(
        **ContactPublic.model_validate(contact).model_dump(),
        conversations=[ConversationPublic.model_validate(r) for r in page.items],
    )
