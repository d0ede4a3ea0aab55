"""Filing what a channel reports besides new messages (`ConversationEvent`): echoes of the
business's own messages, edits, deletions, reactions and reads. None of them is answered.

- An echo of a message Parley sent is already stored; any other echo is a person answering
  from the channel's own app: it is stored as the operator's message and the conversation goes
  to human mode (assignee ``echo``), so the agent stops answering there until someone hands
  it back (see `handoff`).
- An edit replaces the stored text (the first text is kept in ``meta.original_text``, the
  message as received in ``payload``).
- A deletion drops the message's text and content (the customer took them back), marks it
  ``meta.deleted_at``, and a message not answered yet is not answered at all.
- A reaction is kept on the message reacted to (``meta.reaction``); a read moves Parley's
  messages up to the one read (or the watermark) to ``read``.

Events about messages Parley never stored (sent before it was installed, or Meta's dashboard
tests) change nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from parley.channels.base import ConversationEvent, StatusUpdate
from parley.observability.metrics import count_handoff
from parley.store.models import Account, Contact, Conversation, Message, utcnow
from parley.store.queries.handoff import BY_ECHO, HUMAN, add_notice, withdraw_agent_replies
from parley.store.queries.inbound import (
    _account,
    _active_conversation,
    _BatchCache,
    _contact,
    allocate_sequence,
)
from parley.store.queries.statuses import _advance
from parley.store.queries.upsert import insert_ignore

__all__ = ["HANDOFF_BY_APP", "apply_events"]

log = structlog.get_logger(__name__)

HANDOFF_BY_APP = "answered from the channel's app"
"""Why a conversation went to handoff when a person wrote from Meta's own inbox."""
DELETED = "deleted by the customer"
_UNREAD = ("sent", "delivered")


@dataclass(frozen=True, slots=True)
class _EventCustomer:
    """The customer an event names: a Messenger PSID or an Instagram IGSID, nothing else."""

    user_id: str
    phone: None = None
    contact_name: None = None
    contact_username: None = None

    @property
    def contact_key(self) -> str:
        return self.user_id


Apply = Callable[[AsyncSession, _BatchCache, ConversationEvent, str], Awaitable[bool]]


async def apply_events(
    session: AsyncSession,
    *,
    events: list[ConversationEvent],
    correlation_id: str,
    notify: bool = False,
) -> int:
    """File `events` in order per customer; returns how many changed something.

    Call it after `record_inbound` for the same webhook, so that an edit or a deletion finds a
    message that arrived in the same batch. With `notify`, an echo that hands a conversation
    to a person writes a notice for PARLEY_HANDOFF_WEBHOOK_URL in the same transaction.
    """
    cache = _BatchCache(notify_handoffs=notify)
    applied = 0
    # The writers' lock order (see record_inbound); the sort is stable, so each customer's
    # events keep their order.
    ordered = sorted(events, key=lambda e: (e.channel, e.account_external_id, e.user_id or ""))
    for event in ordered:
        if await _APPLY[event.kind](session, cache, event, correlation_id):
            applied += 1
    await session.flush()
    return applied


# --- echoes -------------------------------------------------------------------------------------


async def _echo(
    session: AsyncSession, cache: _BatchCache, event: ConversationEvent, correlation_id: str
) -> bool:
    account = await _account(session, cache, event.channel, event.account_external_id)
    mid = event.channel_message_id
    if not mid or await _message(session, account.id, mid) is not None:
        return False  # Parley's own send (or this echo, filed already)
    if not event.user_id:
        log.warning("event.echo_without_customer", channel=event.channel)
        return False
    if await _in_flight(session, account.id, event):
        return False  # Parley's send, echoed before its answer was recorded
    contact = await _contact(session, cache, account, _EventCustomer(event.user_id))
    conversation = await _active_conversation(session, cache, account, contact)
    sequence_no = await _hand_off(session, cache, conversation, event.channel)
    await insert_ignore(
        session,
        Message,
        {
            "conversation_id": conversation.id,
            "account_id": account.id,
            "sequence_no": sequence_no,
            "direction": "out",
            "sender": "operator",
            "kind": "text" if event.text or not event.media else event.media[0].kind,
            "text": event.text,
            "payload": event.payload,
            "channel_message_id": mid,
            "status": "sent",
            "meta": {
                "correlation_id": correlation_id,
                "sent_at": event.timestamp.isoformat(),
                "source": "channel_app",
            },
            "created_at": utcnow(),
            "updated_at": utcnow(),
        },
        ["account_id", "channel_message_id"],
    )
    return True


async def _hand_off(
    session: AsyncSession, cache: _BatchCache, conversation: Conversation, channel: str
) -> int:
    """Put the conversation in human mode (if it is not yet) in the statement that reserves
    the echo's sequence number; returns that number."""
    if conversation.mode == HUMAN:
        return await allocate_sequence(session, conversation_id=conversation.id)
    now = utcnow()
    log.info(
        "conversation.handoff",
        reason=HANDOFF_BY_APP,
        conversation_id=conversation.id,
        channel=channel,
    )
    changes: dict[str, Any] = {
        "mode": HUMAN,
        "assignee": BY_ECHO,
        "mode_changed_at": now,
        "mode_reason": HANDOFF_BY_APP,
        "handed_off_at": now,
    }
    # One UPDATE of the conversation per transaction (see allocate_sequence); the cached row
    # learns what changed without being written again.
    sequence_no = await allocate_sequence(session, conversation_id=conversation.id, **changes)
    for name, value in changes.items():
        set_committed_value(conversation, name, value)
    count_handoff("app_echo")
    # A person is answering: what the agent still had queued would talk over them.
    await withdraw_agent_replies(session, conversation_id=conversation.id)
    if cache.notify_handoffs:
        await add_notice(
            session, conversation_id=conversation.id, assignee=BY_ECHO, reason=HANDOFF_BY_APP
        )
    return sequence_no


async def _in_flight(session: AsyncSession, account_id: int, event: ConversationEvent) -> bool:
    """Whether Parley is sending this very text to this customer right now: Meta may deliver
    the echo before the send's answer is recorded, so its id is not known yet."""
    if not event.text:
        return False  # Parley sends text only
    found = await session.scalar(
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .where(
            Message.account_id == account_id,
            Message.direction == "out",
            Message.status == "queued",
            Message.channel_message_id.is_(None),
            Message.text == event.text,
            or_(Contact.user_id == event.user_id, Contact.external_id == event.user_id),
        )
        .limit(1)
    )
    return found is not None


# --- edits, deletions, reactions ----------------------------------------------------------------


async def _edit(
    session: AsyncSession, cache: _BatchCache, event: ConversationEvent, correlation_id: str
) -> bool:
    message = await _customers_message(session, event)
    if message is None or message.meta.get("deleted_at"):
        return False
    meta = {**message.meta, "edited_at": event.timestamp.isoformat()}
    if event.text is not None and event.text != message.text:
        meta.setdefault("original_text", message.text)
        message.text = event.text
    message.meta = meta
    return True


async def _delete(
    session: AsyncSession, cache: _BatchCache, event: ConversationEvent, correlation_id: str
) -> bool:
    message = await _customers_message(session, event)
    if message is None or message.meta.get("deleted_at"):
        return False
    message.text = None
    message.payload = event.payload
    message.meta = {
        key: value
        for key, value in {**message.meta, "deleted_at": event.timestamp.isoformat()}.items()
        if key != "original_text"
    }
    # Not answered yet: never. A turn that already read it finds it gone when it stores its
    # answer, and the answer is given up (see record_turn) and made again without it.
    await session.execute(
        update(Message)
        .where(Message.id == message.id, Message.status == "received")
        .values(status="ignored", error=DELETED, updated_at=utcnow())
    )
    return True


async def _reaction(
    session: AsyncSession, cache: _BatchCache, event: ConversationEvent, correlation_id: str
) -> bool:
    account = await _existing_account(session, event)
    mid = event.channel_message_id
    message = await _message(session, account.id, mid) if account and mid else None
    if message is None:
        return False
    meta = dict(message.meta)
    if event.reaction is None:
        if meta.pop("reaction", None) is None:
            return False
        meta.pop("reacted_at", None)
    else:
        meta.update(reaction=event.reaction, reacted_at=event.timestamp.isoformat())
    message.meta = meta
    return True


# --- reads ----------------------------------------------------------------------------------------


async def _read(
    session: AsyncSession, cache: _BatchCache, event: ConversationEvent, correlation_id: str
) -> bool:
    account = await _existing_account(session, event)
    if account is None:
        return False
    query = (
        select(Message)
        .where(Message.direction == "out", Message.status.in_(_UNREAD))
        .execution_options(populate_existing=True)
    )
    if event.channel_message_id:
        # Instagram names the message read: it and everything before it in its conversation.
        last = await _message(session, account.id, event.channel_message_id)
        if last is None or last.direction != "out":
            return False
        query = query.where(
            Message.conversation_id == last.conversation_id,
            Message.sequence_no <= last.sequence_no,
        )
    elif event.watermark is not None and event.user_id:
        # Messenger: everything sent to this customer up to the watermark.
        conversations = (
            select(Conversation.id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .where(
                Conversation.account_id == account.id,
                or_(Contact.user_id == event.user_id, Contact.external_id == event.user_id),
            )
        )
        query = query.where(
            Message.conversation_id.in_(conversations), Message.created_at <= event.watermark
        )
    else:
        return False
    report = StatusUpdate(
        event.channel, event.account_external_id, "", "read", event.timestamp, event.user_id
    )
    moved = [message for message in await session.scalars(query) if _advance(message, report)]
    return bool(moved)


# --- lookups --------------------------------------------------------------------------------------


async def _existing_account(session: AsyncSession, event: ConversationEvent) -> Account | None:
    """The account the event is for, if Parley has one: an event alone never creates it."""
    return await session.scalar(
        select(Account).where(
            Account.channel == event.channel, Account.external_id == event.account_external_id
        )
    )


async def _message(session: AsyncSession, account_id: int, mid: str) -> Message | None:
    # Refreshed from the row: statuses and inbound messages are written with Core statements,
    # which leave a message loaded earlier in the transaction as it was.
    return await session.scalar(
        select(Message)
        .where(Message.account_id == account_id, Message.channel_message_id == mid)
        .execution_options(populate_existing=True)
    )


async def _customers_message(session: AsyncSession, event: ConversationEvent) -> Message | None:
    account = await _existing_account(session, event)
    if account is None or not event.channel_message_id:
        return None
    message = await _message(session, account.id, event.channel_message_id)
    return message if message is not None and message.direction == "in" else None


_APPLY: dict[str, Apply] = {
    "echo": _echo,
    "edit": _edit,
    "delete": _delete,
    "reaction": _reaction,
    "read": _read,
}
