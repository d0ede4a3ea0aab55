"""What the worker reads before an agent turn and writes after it, in one transaction each."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Select, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import Insert, Update

from parley.errors import LeaseLost
from parley.store.db import defers_next_statement, execute_guarded, last_statement_of, reading
from parley.store.direct import Detached, DirectWrites, Reads, Step, detached_in, many, step
from parley.store.models import (
    CONVERSATIONS,
    MESSAGES,
    OUTBOX,
    Account,
    Contact,
    Conversation,
    Message,
    utcnow,
)
from parley.store.queries.inbound import (
    SequenceRefused,
    refused_why,
    reserve_sequence,
    reserve_statement,
    reserved_sequence_no,
)
from parley.store.queries.upstream_deletions import CONVERSATION, UpstreamObject, queue_deletions
from parley.store.queries.usage import UsageAdd, add_turn_usage, usage_steps

AGENT_MAY_ANSWER = or_(CONVERSATIONS.c.mode == "agent", CONVERSATIONS.c.assignee == "agent")
"""A conversation the agent's turn may still answer: in agent mode, or handed to a person by
the agent's own handoff tool in this very turn (its words to the customer still go out). On
the table's columns, for `reserve_sequence`'s Core statement."""


@dataclass(frozen=True, slots=True)
class TurnWork:
    """A conversation with the inbound messages its next turn answers, oldest first."""

    conversation: Conversation
    account: Account
    contact: Contact
    pending: list[Message]


@dataclass(frozen=True, slots=True)
class Reply:
    """One message a turn stores: an outbound one queued for delivery, by default."""

    text: str | None
    sender: str = "agent"
    kind: str = "text"
    response_id: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: Decimal | None = None
    latency_ms: int | None = None
    prompt_version_id: int | None = None
    """The prompt version that produced an agent's answer."""
    meta: dict[str, Any] | None = None
    deliver: bool = True
    """False for what the customer never sees (tool calls): stored, not sent."""
    # Set by doors with no outbox (the Responses API), which store their inputs too:
    direction: str | None = None
    status: str | None = None
    payload: dict[str, Any] | None = None
    error: str | None = None


async def conversation_parties(
    session: AsyncSession, *, conversation_id: int
) -> tuple[Conversation, Account, Contact] | None:
    """The conversation with its account and contact, in one query."""
    row = (
        await session.execute(_parties_statement(), {"conversation_id": conversation_id})
    ).first()
    return (row[0], row[1], row[2]) if row is not None else None


@functools.cache
def _parties_statement() -> Select[Conversation, Account, Contact]:
    """Built once: every turn and delivery reads a conversation's parties."""
    return (
        select(Conversation, Account, Contact)
        .join(Account, Account.id == Conversation.account_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .where(Conversation.id == bindparam("conversation_id"))
    )


async def load_work(reads: Reads, *, conversation_id: int) -> TurnWork | None:
    """The conversation's waiting inbound messages with its parties, or None when there is
    nothing to do. One statement of plain columns (on SQLite without a session, `Reads`),
    made into detached objects (`Detached`): through the ORM, loading them was most of a
    turn's reading cost."""
    rows = await reads.rows("work", _work_columns_statement, {"conversation_id": conversation_id})
    if not rows:
        return None
    conversation, account, contact, first = detached_in(rows[0], *_PARTIES, _MESSAGE)
    start = len(rows[0]) - len(_MESSAGE.keys)
    later = [_MESSAGE.load(row, start) for row in rows[1:]]
    return TurnWork(conversation, account, contact, [first, *later])


_PARTIES = (Detached.of(Conversation), Detached.of(Account), Detached.of(Contact))
_MESSAGE = Detached.of(Message)


async def waits_directly(direct: DirectWrites, *, conversation_id: int) -> bool:
    """Whether any inbound message of the conversation waits for a turn, read without a
    session (`store.direct`): after each turn the worker asks, and usually none does, which
    one indexed row (or none) tells, without loading the parties as `load_work` does."""
    waiting = direct.prepared("work waits", _waits_statement)
    return bool(await direct.read(waiting, {"conversation_id": conversation_id}))


@functools.cache
def _waits_statement() -> Select[Any]:
    columns = MESSAGES.c
    return (
        select(columns.id)
        .where(
            columns.conversation_id == bindparam("conversation_id"),
            columns.direction == "in",
            columns.status == "received",
        )
        .limit(1)
    )


@functools.cache
def _work_columns_statement() -> Select[Any]:
    """Built once: every turn runs it (twice where turns go through a session: after the turn,
    to find that nothing more waits). The parties' statement with each waiting message, as
    the columns of `_PARTIES` and `_MESSAGE`, the parties' repeated on every row."""
    return (
        _parties_statement()
        .join(Message, Message.conversation_id == Conversation.id)
        .where(Message.direction == "in", Message.status == "received")
        .order_by(Message.sequence_no)
        .with_only_columns(*(c for shape in (*_PARTIES, _MESSAGE) for c in shape.columns))
    )


async def start_attempt(session: AsyncSession, *, message_ids: list[int]) -> None:
    """Count a turn started for these messages, committed before the model is called, so
    that a message that keeps killing its worker is noticed (see `worker.process`). A Core
    statement built once, on the session's connection (its caller's session holds none of
    these messages' objects)."""
    connection = await session.connection()
    defers_next_statement(connection)  # on SQLite, it rides with the caller's next statement
    await connection.execute(_start_attempt_statement(), {"ids": message_ids})


async def start_attempt_directly(
    direct: DirectWrites, *, message_ids: list[int], conversation_id: int, since: datetime
) -> int:
    """`start_attempt`, then `inbound_since` (handled only) in the same transaction, sent
    whole without a session (`store.direct`: in one trip on SQLite's line); returns the
    count."""
    attempt = direct.prepared("attempt", _start_attempt_statement)
    count = direct.prepared("inbound since", functools.partial(_inbound_since_statement, True))
    ((counted,),) = await direct.commit(
        [step(attempt, {"ids": message_ids})],
        last=step(count, {"conversation_id": conversation_id, "since": since}),
    )
    return int(counted or 0)


@functools.cache
def _start_attempt_statement() -> Update:
    table = MESSAGES
    return (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)))
        .values(attempts=table.c.attempts + 1)
    )


async def save_transcript(
    session: AsyncSession, *, message_id: int, text: str, meta: dict[str, Any]
) -> None:
    """A voice note's transcript as the message's text (what the agent, the history and an
    operator read of it), with `meta` saying how it was made; only while the message still
    waits for its turn, so a redone turn reuses it instead of transcribing again."""
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "received")
        .values(text=text, meta=meta, updated_at=utcnow())
    )


async def set_remote_conversation(
    session: AsyncSession,
    *,
    conversation_id: int,
    remote_id: str | None,
    replaced: str | None = None,
    commits: bool = False,
) -> None:
    """Point the conversation at another upstream conversation. The last turn's input tokens
    measured the old one, so they are cleared with it: a turn redone after a crash does not
    prune the new one again. `replaced` (a pruned chat's old one) is queued for deletion
    upstream. One made for a conversation that went meanwhile (expired, its
    customer erased) is queued for deletion upstream instead.

    `commits`: the caller commits right after. Without `replaced`, the UPDATE is then the
    transaction's last statement (on SQLite its COMMIT rides with it, one trip that holds
    the connection for no other), and an orphan's deletion, when the UPDATE found no
    conversation, is queued in a transaction of its own."""
    last = commits and replaced is None
    if last:
        await last_statement_of(session)
    result = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(remote_conversation_id=remote_id, last_input_tokens=None)
    )
    if remote_id and not result.rowcount:  # type: ignore[attr-defined]
        if last:
            await session.commit()  # the UPDATE's, which changed nothing
        await queue_deletions(
            session, objects=[UpstreamObject(CONVERSATION, remote_id)], reason="orphan"
        )
    elif replaced:
        # A pruned chat's old upstream conversation serves no turn any more: it goes in the
        # transaction that stops pointing at it, so it is neither kept for ever nor lost.
        await queue_deletions(
            session, objects=[UpstreamObject(CONVERSATION, replaced)], reason="pruned"
        )


async def record_turn(
    session: AsyncSession,
    *,
    conversation_id: int,
    account_id: int,
    answered: list[int],
    replies: list[Reply],
    inbound_status: str = "answered",
    inbound_error: str | None = None,
    last_response_id: str | None = None,
    last_input_tokens: int | None = None,
    usage: UsageAdd | None = None,
    user_id: int | None = None,
    agent_turn: bool = False,
    commits: bool = False,
) -> None:
    """The turn's outcome in one transaction: the inbound messages marked, the replies stored
    with their outbox rows, the usage summed per account (and per user, for the Responses
    API). A worker that dies before this commits leaves the inbound messages `received`, and
    the next worker redoes the turn. The Responses API stores its inputs among `replies`
    (`answered` empty) in the transaction that finishes its response, so a reader never sees
    one without the other. `last_response_id` and `last_input_tokens` (what the next turn
    chains on, and whether it prunes) are set on the conversation with the outcome. An
    `agent_turn` whose conversation a person took over meanwhile stores nothing (`LeaseLost`):
    the customer's messages stay waiting for the person.

    `commits`: this commits the transaction itself, and on SQLite the whole of it is then one
    trip to the database's thread: every statement is held back for the COMMIT's trip, the
    replies take their sequence numbers in SQL from the conversation's counter, and the
    conditions the outcome depends on (the inputs still unanswered, the conversation still
    there and the agent's) are guards checked in that trip (`store.db.execute_guarded`). A
    guard the caller held back before (the Responses API's status) raises its refusal from
    here, with nothing stored.

    Raises:
        LeaseLost: another worker answered the inputs, or a person took the conversation.
        ConversationGone: the conversation was deleted meanwhile (retention, an erasure).
    """
    also = _chained(last_response_id, last_input_tokens)
    # Core statements built once, on the session's connection: the ORM's cost more to build
    # and to keep its books on than the database spent on the rows, and no caller reads
    # these rows back as objects of the session.
    connection = await session.connection()
    now = utcnow()
    marking = {"ids": answered, "status": inbound_status, "error": inbound_error, "updated_at": now}
    count = max(len(replies), 1)
    try:
        # The conversation's row first, as every writer to a conversation does (webhooks
        # too), so that writers queue on it instead of deadlocking on each other's message
        # rows; its guard also goes first, so that a conversation gone meanwhile reads as gone
        # and not as inputs answered elsewhere.
        await reserve_sequence(
            session,
            conversation_id=conversation_id,
            count=count,
            only_if=AGENT_MAY_ANSWER if agent_turn else None,
            hold=commits,
            **also,
        )
        if answered:
            await _claim(connection, marking)
        if replies:
            await _insert_replies(connection, conversation_id, account_id, replies, answered, now)
        if usage is not None:
            await add_turn_usage(
                connection, account_id=account_id, user_id=user_id, usage=usage, commits=commits
            )
        if commits:
            await session.commit()
    except SequenceRefused as refused:
        await session.rollback()
        raise await refused_why(session, refused) from None


async def record_turn_directly(
    direct: DirectWrites,
    sessions: async_sessionmaker[AsyncSession],
    *,
    before: Sequence[Step] = (),
    conversation_id: int,
    account_id: int,
    answered: list[int],
    replies: list[Reply],
    inbound_status: str = "answered",
    inbound_error: str | None = None,
    last_response_id: str | None = None,
    last_input_tokens: int | None = None,
    usage: UsageAdd | None = None,
    user_id: int | None = None,
    agent_turn: bool = False,
    then_waiting: bool = False,
) -> bool | None:
    """`record_turn` with `commits`, and `before` ahead of it, sent whole in one trip on
    SQLite's line, or by asyncpg itself on PostgreSQL (`store.direct`): the same statements and
    guards, without a session.

    With `then_waiting`, returns whether inbound messages of the conversation still wait for
    a turn, read in the same trip after the outcome (what `waits_directly` would read next);
    otherwise None.

    Raises:
        LeaseLost, ConversationGone: as `record_turn`.
        A refusal of one of `before`'s guards, with nothing stored.
    """
    now = utcnow()
    also = _chained(last_response_id, last_input_tokens)
    reserve = direct.prepared(
        ("reserve", tuple(sorted(also)), agent_turn),
        lambda: reserve_statement(tuple(sorted(also)), AGENT_MAY_ANSWER if agent_turn else None),
    )
    values = {"last_message_at": now, "updated_at": now, **also}
    steps = [
        *before,
        step(
            reserve,
            {"conversation_id": conversation_id, "count": max(len(replies), 1), **values},
            guard=(1, lambda _: SequenceRefused(conversation_id)),
        ),
    ]
    if answered:
        marking = {"ids": answered, "status": inbound_status, "error": inbound_error}
        steps.append(
            step(
                direct.prepared("mark answered", _mark_answered_statement),
                {**marking, "updated_at": now},
                guard=(len(answered), lambda _: LeaseLost(_ANSWERED_ELSEWHERE)),
            )
        )
    if replies:
        rows = _reply_rows(conversation_id, account_id, replies, answered, now)
        steps.append(many(direct.prepared("replies", _insert_messages, list(rows[0])), rows))
        delivered = _delivered(replies)
        if delivered:
            outbox = direct.prepared("outbox", _insert_outbox)
            numbering = {"thread_id": conversation_id, "count": len(replies)}
            steps.append(step(outbox, {**numbering, "offsets": delivered, "now": now}))
    if usage is not None:
        steps += usage_steps(direct, account_id=account_id, user_id=user_id, usage=usage)
    waiting = (
        step(direct.prepared("work waits", _waits_statement), {"conversation_id": conversation_id})
        if then_waiting
        else None
    )
    try:
        rows = await direct.commit(steps, last=waiting)
    except SequenceRefused as refused:
        async with reading(sessions) as session:
            raise await refused_why(session, refused) from None
    return bool(rows) if then_waiting else None


def _chained(last_response_id: str | None, last_input_tokens: int | None) -> dict[str, object]:
    """What the next turn chains on, set on the conversation with the outcome."""
    also: dict[str, object] = {}
    if last_response_id is not None:
        also["last_response_id"] = last_response_id
    if last_input_tokens is not None:
        also["last_input_tokens"] = last_input_tokens
    return also


_ANSWERED_ELSEWHERE = "the turn's messages were answered by another worker"


async def _claim(connection: AsyncConnection, marking: dict[str, Any]) -> None:
    """The turn's inputs marked as answered; if any of them was not waiting any more, another
    worker answered them (a lease lost to a long pause), and nothing of this turn is kept."""
    await execute_guarded(
        connection,
        _mark_answered_statement(),
        marking,
        expect=len(marking["ids"]),
        refusal=lambda _: LeaseLost(_ANSWERED_ELSEWHERE),
    )


async def _insert_replies(
    connection: AsyncConnection,
    conversation_id: int,
    account_id: int,
    replies: list[Reply],
    answered: list[int],
    now: datetime,
) -> None:
    """The replies in one statement, numbered in SQL from the counter `reserve_sequence` has
    just moved, and their outbox rows in one more that finds them by those numbers; neither
    returns anything, so on SQLite both ride with the trip after them."""
    numbering = {"thread_id": conversation_id, "count": len(replies)}
    values = _reply_rows(conversation_id, account_id, replies, answered, now)
    defers_next_statement(connection)
    await connection.execute(_insert_messages(), values)
    delivered = _delivered(replies)
    if delivered:
        defers_next_statement(connection)
        await connection.execute(_insert_outbox(), {**numbering, "offsets": delivered, "now": now})


def _reply_rows(
    conversation_id: int,
    account_id: int,
    replies: list[Reply],
    answered: list[int],
    now: datetime,
) -> list[dict[str, Any]]:
    """The replies' rows for `_insert_messages`, numbered from the counter in SQL."""
    reply_to = answered[-1] if answered else None
    numbering = {"thread_id": conversation_id, "count": len(replies)}
    return [
        {**reply_row(conversation_id, account_id, reply, reply_to, now=now), **numbering}
        | {"offset": offset}
        for offset, reply in enumerate(replies)
    ]


def _delivered(replies: list[Reply]) -> list[int]:
    """The offsets of the replies that are sent to the customer (an outbox row each)."""
    return [offset for offset, reply in enumerate(replies) if reply.deliver]


@functools.cache
def _insert_messages() -> Insert:
    """Built once: every turn stores its messages."""
    offset = bindparam("offset", type_=Integer)
    return insert(MESSAGES).values(sequence_no=reserved_sequence_no(offset))


@functools.cache
def _insert_outbox() -> Insert:
    """The outbox rows of a turn's replies, found by their offsets among the numbers the turn
    reserved (a range of the conversation's index, the turn's own rows only)."""
    messages = MESSAGES.c
    now = bindparam("now", type_=OUTBOX.c.created_at.type)
    first = reserved_sequence_no(literal(0, Integer))
    replies = select(messages.id, messages.conversation_id, literal(0), now, now).where(
        messages.conversation_id == bindparam("thread_id", type_=Integer),
        messages.sequence_no >= first,
        (messages.sequence_no - first).in_(bindparam("offsets", expanding=True)),
    )
    columns = ("message_id", "conversation_id", "attempts", "next_attempt_at", "created_at")
    return insert(OUTBOX).from_select(columns, replies)


@functools.cache
def _mark_answered_statement() -> Update:
    """Built once: every channel turn marks what it answered."""
    table = MESSAGES
    return (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)), table.c.status == "received")
        .values(
            status=bindparam("status"), error=bindparam("error"), updated_at=bindparam("updated_at")
        )
    )


def reply_values(
    conversation_id: int,
    account_id: int,
    sequence_no: int,
    reply: Reply,
    reply_to: int | None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A reply's `messages` row, as the values of an INSERT (every row has the same keys),
    stamped `now` (by default the present moment)."""
    return {
        **reply_row(conversation_id, account_id, reply, reply_to, now=now),
        "sequence_no": sequence_no,
    }


def reply_row(
    conversation_id: int,
    account_id: int,
    reply: Reply,
    reply_to: int | None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """`reply_values` but its sequence number, for an INSERT that numbers it in SQL."""
    now = now or utcnow()
    return {
        "conversation_id": conversation_id,
        "account_id": account_id,
        "direction": reply.direction or ("out" if reply.deliver else "internal"),
        "sender": reply.sender,
        "kind": reply.kind,
        "text": reply.text,
        "payload": reply.payload,
        "error": reply.error,
        "status": reply.status or ("queued" if reply.deliver else "done"),
        "reply_to_id": reply_to,
        "response_id": reply.response_id,
        "model": reply.model,
        "input_tokens": reply.input_tokens,
        "cached_tokens": reply.cached_tokens,
        "output_tokens": reply.output_tokens,
        "reasoning_tokens": reply.reasoning_tokens,
        "cost_usd": reply.cost_usd,
        "latency_ms": reply.latency_ms,
        "prompt_version_id": reply.prompt_version_id,
        "meta": reply.meta or {},
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


async def conversations_waiting(
    session: AsyncSession, *, older_than: timedelta | None = None, limit: int = 1000
) -> list[int]:
    """Conversations with inbound messages still `received`: what a lost signal left behind.

    Args:
        older_than: only messages that have waited at least this long (None: all of them).
    """
    query = (
        select(Message.conversation_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Message.status == "received",
            Conversation.status == "active",
            Conversation.mode == "agent",
        )
        .group_by(Message.conversation_id)
        .order_by(Message.conversation_id)
        .limit(limit)
    )
    if older_than is not None:
        cutoff: datetime = utcnow() - older_than
        query = query.where(Message.created_at <= cutoff)
    return list(await session.scalars(query))


async def failed_messages(session: AsyncSession, *, limit: int = 100) -> list[Message]:
    """Inbound messages that got the fallback instead of an answer, newest first."""
    query = (
        select(Message)
        .where(Message.direction == "in", Message.status == "failed")
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return list(await session.scalars(query))


async def retry_message(session: AsyncSession, *, message_id: int) -> int | None:
    """Put a failed inbound message back in line; returns its conversation, or None when there
    is no such failed message."""
    result = await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.direction == "in", Message.status == "failed")
        .values(status="received", attempts=0, error=None, updated_at=utcnow())
        .returning(Message.conversation_id)
    )
    return result.scalar_one_or_none()


async def inbound_since(
    session: AsyncSession, *, conversation_id: int, since: datetime, handled_only: bool = True
) -> int:
    """How many customer messages the conversation received since `since` (by default only
    those already handled, i.e. not waiting for this turn)."""
    connection = await session.connection()
    count = await connection.scalar(
        _inbound_since_statement(handled_only),
        {"conversation_id": conversation_id, "since": since},
    )
    return int(count or 0)


@functools.cache
def _inbound_since_statement(handled_only: bool) -> Select[int]:
    """Built once, as Core: every turn counts its customer's rate window."""
    table = MESSAGES
    query = select(func.count()).where(
        table.c.conversation_id == bindparam("conversation_id"),
        table.c.direction == "in",
        table.c.created_at >= bindparam("since"),
    )
    if handled_only:
        query = query.where(table.c.status != "received")
    return query


async def auto_reply_since(
    session: AsyncSession, *, conversation_id: int, kind: str, since: datetime
) -> bool:
    """Whether an automatic reply of this kind (``meta.auto``) went out since `since`."""
    found = await session.scalar(
        select(Message.id)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "out",
            Message.created_at >= since,
            Message.meta["auto"].as_string() == kind,
        )
        .limit(1)
    )
    return found is not None
