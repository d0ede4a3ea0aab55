"""Who answers a conversation: the agent (mode ``agent``) or a person (mode ``human``).

A conversation goes to a person when the agent calls its handoff tool, when a person writes
from the channel's own app (an echo), or when an operator takes it over; it comes back to the
agent when an operator hands it back, or after PARLEY_HANDOFF_IDLE_MINUTES without an
operator's reply.

What the customer writes in human mode is stored `received` and left to the person: the
worker answers agent-mode conversations only, and an operator's reply marks everything the
customer wrote before it `answered`. On an operator's hand-back, what is still unanswered is
closed as `ignored` (the person saw it and chose to hand back), unless they ask for it to be
answered; the idle hand-back leaves it for the agent, since nobody answered it. So the agent
never answers a message a person answered, and after a hand-back answers only what follows.

Taking over withdraws the agent's replies still waiting in the outbox (status ``withdrawn``);
a reply being sent at that moment is past recall. A turn that was running when a person took
over finds the conversation taken when it stores its answer, and gives it up (see
`record_turn`), leaving the customer's messages waiting for the person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from parley.errors import ConversationModeConflict, ConversationNotFound
from parley.store.models import Conversation, HandoffNotice, Message, Outbox, utcnow
from parley.store.queries.inbound import allocate_sequence
from parley.store.queries.responses import API_CHANNEL
from parley.store.queries.turns import Reply, reply_values

AGENT = "agent"
HUMAN = "human"
OPERATOR = "operator"
"""A person's message's `sender`."""
BY_TOOL = "agent"
"""The assignee when the agent's handoff tool asked for a person."""
BY_ECHO = "echo"
"""The assignee when a person wrote from the channel's own app."""
BY_IDLE = "idle"
"""Who hands back a conversation nobody answered for PARLEY_HANDOFF_IDLE_MINUTES."""
WITHDRAWN = "withdrawn"
WITHDRAWN_ERROR = "withdrawn: an operator took the conversation over before it was sent"
HANDED_BACK_UNANSWERED = "arrived while a person had the conversation; handed back unanswered"
REASON_LENGTH = 255


@dataclass(frozen=True, slots=True)
class ModeChange:
    conversation: Conversation
    changed: bool
    """False when it already was in that mode (an operator taking over from the tool's
    handoff still becomes its assignee)."""
    withdrawn: int = 0
    """Agent replies taken out of the outbox (a takeover)."""
    pending: int = 0
    """Customer messages still unanswered (a hand-back: closed as `ignored` or left for the
    agent)."""


def _cut(reason: str | None) -> str | None:
    return reason[:REASON_LENGTH] if reason else None


async def _locked(session: AsyncSession, conversation_id: int) -> Conversation:
    """The conversation row, locked like every writer's (NO KEY UPDATE) until commit."""
    conversation = await session.scalar(
        select(Conversation)
        .where(Conversation.id == conversation_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if conversation is None:
        raise ConversationNotFound(f"no conversation {conversation_id}")
    return conversation


def _refuse_api(conversation: Conversation) -> None:
    """A Responses API conversation has no customer on a channel for a person to answer."""
    if conversation.channel == API_CHANNEL:
        raise ConversationModeConflict(
            f"conversation {conversation.id} belongs to the Responses API: no person answers it"
        )


async def hand_to_human(
    session: AsyncSession,
    *,
    conversation_id: int,
    assignee: str,
    reason: str | None,
    notify: bool,
) -> ModeChange:
    """Put the conversation in human mode (the handoff tool's and an operator's way); with
    `notify`, a notice for PARLEY_HANDOFF_WEBHOOK_URL is written in the same transaction.
    An operator taking over also withdraws the agent's queued replies."""
    conversation = await _locked(session, conversation_id)
    if assignee != BY_TOOL:
        _refuse_api(conversation)
    changed = conversation.mode != HUMAN
    now = utcnow()
    if changed:
        conversation.mode = HUMAN
        conversation.mode_changed_at = now
        conversation.mode_reason = _cut(reason)
        if assignee == BY_TOOL:
            # What the prompts' report counts: conversations the agent itself handed over.
            conversation.handed_off_at = now
    conversation.assignee = assignee
    withdrawn = 0
    if assignee not in (BY_TOOL, BY_ECHO):
        withdrawn = await withdraw_agent_replies(session, conversation_id=conversation_id)
    if changed and notify:
        await add_notice(session, conversation_id=conversation_id, assignee=assignee, reason=reason)
    await session.flush()
    return ModeChange(conversation, changed, withdrawn=withdrawn)


async def withdraw_agent_replies(session: AsyncSession, *, conversation_id: int) -> int:
    """Take the agent's (and the system's) replies out of the outbox before they are sent;
    returns how many. One being sent right now (held by a sender) goes out."""
    now = utcnow()
    rows = (
        await session.execute(
            select(Outbox.id, Outbox.message_id)
            .join(Message, Message.id == Outbox.message_id)
            .where(
                Outbox.conversation_id == conversation_id,
                Message.sender != OPERATOR,
                or_(Outbox.locked_until.is_(None), Outbox.locked_until < now),
            )
        )
    ).all()
    if not rows:
        return 0
    await session.execute(delete(Outbox).where(Outbox.id.in_([r.id for r in rows])))
    await session.execute(
        update(Message)
        .where(Message.id.in_([r.message_id for r in rows]))
        .values(status=WITHDRAWN, error=WITHDRAWN_ERROR, updated_at=now)
    )
    return len(rows)


async def record_operator_reply(
    session: AsyncSession, *, conversation_id: int, operator: str, parts: list[str]
) -> list[int]:
    """A person's reply, as the channel sends it (`parts`), queued in the outbox with sender
    ``operator``; what the customer wrote before it is `answered`. The operator becomes the
    conversation's assignee.

    Raises:
        ConversationNotFound: no such conversation.
        ConversationModeConflict: the agent has it (take it over first).
    """
    conversation = await _locked(session, conversation_id)
    _refuse_api(conversation)
    if conversation.mode != HUMAN:
        raise ConversationModeConflict(
            f"conversation {conversation_id} is answered by the agent: take it over first"
        )
    first = await allocate_sequence(
        session, conversation_id=conversation_id, count=len(parts), assignee=operator
    )
    await session.execute(
        update(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "in",
            Message.status == "received",
        )
        .values(status="answered", error=None, updated_at=utcnow())
    )
    values = [
        reply_values(
            conversation_id,
            conversation.account_id,
            first + offset,
            Reply(
                part,
                sender=OPERATOR,
                meta={"operator": operator, "part": offset + 1, "parts": len(parts)},
            ),
            None,
        )
        for offset, part in enumerate(parts)
    ]
    ids = list(
        await session.scalars(
            insert(Message).returning(Message.id, sort_by_parameter_order=True), values
        )
    )
    await session.execute(
        insert(Outbox), [{"message_id": i, "conversation_id": conversation_id} for i in ids]
    )
    await session.flush()
    return ids


async def hand_back(
    session: AsyncSession,
    *,
    conversation_id: int,
    by: str,
    answer_pending: bool = False,
) -> ModeChange:
    """Give the conversation back to the agent. What the customer wrote that nobody answered
    is closed as `ignored`, or with `answer_pending` left for the agent's next turn (the
    caller signals the queue).

    Raises:
        ConversationNotFound: no such conversation.
        ConversationModeConflict: the agent has it already.
    """
    conversation = await _locked(session, conversation_id)
    if conversation.mode != HUMAN:
        raise ConversationModeConflict(f"conversation {conversation_id} is with the agent already")
    now = utcnow()
    conversation.mode = AGENT
    conversation.assignee = by
    conversation.mode_changed_at = now
    conversation.mode_reason = "handed back"
    waiting = and_(
        Message.conversation_id == conversation_id,
        Message.direction == "in",
        Message.status == "received",
    )
    if answer_pending:
        pending = len(list(await session.scalars(select(Message.id).where(waiting))))
    else:
        result = await session.execute(
            update(Message)
            .where(waiting)
            .values(status="ignored", error=HANDED_BACK_UNANSWERED, updated_at=now)
        )
        pending = int(result.rowcount)  # type: ignore[attr-defined]
    await session.flush()
    return ModeChange(conversation, True, pending=pending)


async def hand_back_idle(session: AsyncSession, *, idle: timedelta, limit: int = 100) -> list[int]:
    """Hand back to the agent the conversations a person has had for `idle` without an
    operator's reply; returns their ids (to signal: what the customer wrote meanwhile is left
    for the agent). Each is one conditional UPDATE, so several workers running this at once
    hand each back once."""
    cutoff = utcnow() - idle
    replied = exists().where(
        Message.conversation_id == Conversation.id,
        Message.sender == OPERATOR,
        Message.created_at > cutoff,
    )
    idle_now = and_(Conversation.mode == HUMAN, Conversation.mode_changed_at <= cutoff, ~replied)
    candidates = list(
        await session.scalars(
            select(Conversation.id).where(idle_now).order_by(Conversation.id).limit(limit)
        )
    )
    handed: list[int] = []
    for conversation_id in candidates:
        result = await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id, idle_now)
            .values(
                mode=AGENT,
                assignee=BY_IDLE,
                mode_changed_at=utcnow(),
                mode_reason="no operator reply",
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            handed.append(conversation_id)
    return handed


# --- notices ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeWork:
    """A claimed notice with what its body says."""

    id: int
    attempts: int
    conversation_id: int
    assignee: str | None
    reason: str | None
    created_at: datetime


async def add_notice(
    session: AsyncSession, *, conversation_id: int, assignee: str | None, reason: str | None
) -> None:
    now = utcnow()
    await session.execute(
        insert(HandoffNotice).values(
            conversation_id=conversation_id,
            assignee=assignee,
            reason=_cut(reason),
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        HandoffNotice.sent_at.is_(None),
        HandoffNotice.failed_at.is_(None),
        HandoffNotice.next_attempt_at <= now,
        or_(HandoffNotice.locked_until.is_(None), HandoffNotice.locked_until < now),
    )


async def claim_notices(session: AsyncSession, *, limit: int, hold: timedelta) -> list[NoticeWork]:
    """Take up to `limit` due notices and hold them for `hold`; a notice another notifier
    took meanwhile is not taken again."""
    now = utcnow()
    ids = list(
        await session.scalars(
            select(HandoffNotice.id).where(_due(now)).order_by(HandoffNotice.id).limit(limit)
        )
    )
    if not ids:
        return []
    claimed = await session.scalars(
        update(HandoffNotice)
        .where(HandoffNotice.id.in_(ids), _due(now))
        .values(locked_until=now + hold)
        .returning(HandoffNotice.id)
    )
    taken = set(claimed)
    rows = await session.scalars(
        select(HandoffNotice).where(HandoffNotice.id.in_(taken)).order_by(HandoffNotice.id)
    )
    return [
        NoticeWork(n.id, n.attempts, n.conversation_id, n.assignee, n.reason, n.created_at)
        for n in rows
    ]


async def mark_notice_sent(session: AsyncSession, *, notice_id: int) -> None:
    await session.execute(
        update(HandoffNotice)
        .where(HandoffNotice.id == notice_id)
        .values(sent_at=utcnow(), locked_until=None, attempts=HandoffNotice.attempts + 1)
    )


async def mark_notice_retry(
    session: AsyncSession, *, notice_id: int, at: datetime | None, error: str
) -> None:
    """Count a failed attempt: try again at `at`, or (None) give up, keeping the row."""
    values: dict[str, object] = {
        "attempts": HandoffNotice.attempts + 1,
        "locked_until": None,
        "error": error[:1000],
    }
    if at is None:
        values["failed_at"] = utcnow()
    else:
        values["next_attempt_at"] = at
    await session.execute(
        update(HandoffNotice).where(HandoffNotice.id == notice_id).values(**values)
    )
