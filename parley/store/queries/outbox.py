"""The outbox: replies waiting to be sent, claimed by delivery one conversation head at a time."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Delete,
    Integer,
    ScalarSelect,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from parley.store.db import defers_next_statement, ends_with_next_statement, last_statement_of
from parley.store.direct import Detached, DirectWrites, Reads, Step, detached_in, step
from parley.store.models import (
    MESSAGES,
    OUTBOX,
    Account,
    Contact,
    Conversation,
    Message,
    Outbox,
    utcnow,
)
from parley.store.queries.upsert import insert_ignore


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row with everything a channel needs to send it."""

    outbox_id: int
    attempts: int
    message: Message
    account: Account
    contact: Contact
    reply_to_channel_id: str | None
    last_customer_at: datetime | None = None
    """When Parley received the customer's latest message in this conversation; None if never."""
    more: bool = True
    """Whether other replies of the conversation waited behind this one when it was claimed.
    When none did, delivery claims no further head of it after this send: a reply queued
    meanwhile wakes delivery's loop, which finds it once this conversation's drain ends."""

    @property
    def reported_failed(self) -> bool:
        """The channel reported this sent message failed (a status webhook): delivery decides
        whether to send it again, instead of sending it."""
        return self.message.status == "failed"


@dataclass(frozen=True, slots=True)
class DueHeads:
    conversations: list[int]
    """Conversations whose oldest outbox row is due and not held, oldest row first."""
    next_at: datetime | None
    """When the first head that is not due and free now (in backoff, or held by a sender)
    becomes so; None when there is none."""


async def due_heads(reads: Reads, *, limit: int, exclude: set[int]) -> DueHeads:
    """Up to `limit` conversations whose oldest outbox row is due and not held by another
    sender, not counting those in `exclude` (being drained); and when delivery must look
    again for the other heads.

    Only the head of each conversation counts, so that a reply in backoff holds back the ones
    after it and the customer reads them in order. A due and free head is not counted in
    `next_at`: delivery starts it now, or its drain is running and wakes delivery when it
    ends. Counting it made delivery look again every 10 ms while sends were in flight.

    One read for both (delivery's loop runs it after every drain).
    """
    values = {"now": utcnow(), "most": limit + len(exclude)}
    rows = await reads.rows("due heads", _due_heads_statement, values)
    next_at = rows[0][1]
    due = [cid for cid, _, _ in rows[1:] if cid not in exclude][:limit]
    return DueHeads(due, cast(datetime | None, next_at))


@functools.cache
def _due_heads_statement() -> CompoundSelect[Any]:
    """Built once, as Core. Its first row is (NULL, when the next head that is not due and
    free becomes so, 0); the due and free heads' (conversation, NULL, row id) follow, oldest
    row first. A head held by a sender becomes free when its hold ends, and due when its next
    attempt is: the later of the two."""
    columns = OUTBOX.c
    heads = (
        select(columns.conversation_id, func.min(columns.id).label("head"))
        .group_by(columns.conversation_id)
        .subquery()
    )
    now = bindparam("now", type_=columns.next_attempt_at.type)
    free = and_(
        columns.next_attempt_at <= now,
        or_(columns.locked_until.is_(None), columns.locked_until < now),
    )
    claimable = case(
        (columns.locked_until > columns.next_attempt_at, columns.locked_until),
        else_=columns.next_attempt_at,
    )
    later = (
        select(
            null().label("conversation_id"),
            func.min(claimable).label("next_at"),
            literal(0, Integer).label("place"),  # before every row id
        )
        .join_from(OUTBOX, heads, heads.c.head == columns.id)
        .where(not_(free))
    )
    due = (
        select(columns.conversation_id, columns.id)
        .join(heads, heads.c.head == columns.id)
        .where(free)
        .order_by(columns.id)
        .limit(bindparam("most"))
        .subquery()
    )
    both = union_all(later, select(due.c.conversation_id, null(), due.c.id))
    return both.order_by(both.selected_columns.place)


async def claim_head(
    session: AsyncSession, *, conversation_id: int, hold: timedelta, commits: bool = False
) -> Delivery | None:
    """Take the conversation's oldest outbox row if it is due and free; hold it for `hold`.

    One UPDATE … RETURNING: only the head counts (a later row never goes before it), and a
    head another sender holds, or one in backoff, is left as it is. It also returns how many
    rows the conversation has queued (`Delivery.more`). `commits`: the caller commits right
    after, with no statement in between; on SQLite the COMMIT then rides with the read of
    what the claimed row sends (`store.db.last_statement_of`), two trips to SQLite's thread
    for a claim instead of three."""
    connection = await session.connection()
    claimed = (
        await connection.execute(_claim_head_statement(), _claim(conversation_id, hold))
    ).all()
    if not claimed:
        return None
    outbox_id, message_id, attempts, queued = claimed[0]
    if commits:
        await last_statement_of(session)
    sent = await connection.execute(_delivery_statement(), {"message_id": message_id})
    return _delivery(outbox_id, attempts, queued, sent.one())


async def claim_head_directly(
    direct: DirectWrites, *, conversation_id: int, hold: timedelta
) -> Delivery | None:
    """`claim_head`, sent whole without a session (`store.direct`; in one trip on SQLite's
    line): the claim, then the read of what it claimed (`_claimed_statement`), in one
    transaction."""
    claim = direct.prepared("claim head", _claim_head_statement)
    read = direct.prepared("claimed", _claimed_statement)
    values = _claim(conversation_id, hold)
    found = read.rows(await direct.commit([step(claim, values)], last=step(read, values)))
    if not found:
        return None
    *sent, outbox_id, attempts, queued = found[0]
    return _delivery(outbox_id, attempts, queued, sent)


def _claim(conversation_id: int, hold: timedelta) -> dict[str, Any]:
    now = utcnow()
    return {"of_conversation": conversation_id, "now_at": now, "hold_until": now + hold}


def _delivery(outbox_id: int, attempts: int, queued: int, sent: Sequence[Any]) -> Delivery:
    """The claimed outbox row with what it sends (`_sends_statement`'s columns)."""
    message, account, contact, reply_to, last_customer_at = detached_in(sent, *_SENT)
    return Delivery(
        outbox_id,
        attempts,
        message,
        account,
        contact,
        reply_to,
        last_customer_at,
        more=queued > 1,
    )


_SENT = (Detached.of(Message), Detached.of(Account), Detached.of(Contact))
"""What a send reads of its message and its parties, as columns made into detached objects."""


@functools.cache
def _claim_head_statement() -> Update:
    """Core, on the session's connection: as an ORM statement, each claim went through the
    ORM's bulk-update machinery (matching the session's objects) for objects it never has."""
    columns = OUTBOX.c
    head, queued = _head_and_queued()
    now = bindparam("now_at", type_=columns.next_attempt_at.type)
    return (
        update(OUTBOX)
        .where(
            columns.id == head,
            columns.next_attempt_at <= now,
            or_(columns.locked_until.is_(None), columns.locked_until < now),
        )
        .values(locked_until=bindparam("hold_until", type_=columns.locked_until.type))
        .returning(columns.id, columns.message_id, columns.attempts, queued)
    )


def _head_and_queued() -> tuple[ScalarSelect[int], ScalarSelect[int]]:
    """The outbox row at the head of the conversation `of_conversation`, and how many rows it
    has queued: what a claim takes and tells (`Delivery.more`)."""
    columns = OUTBOX.c
    head = (
        select(func.min(columns.id))
        .where(columns.conversation_id == bindparam("of_conversation"))
        .scalar_subquery()
    )
    behind = OUTBOX.alias("queued")
    queued = (
        select(func.count())
        .select_from(behind)
        .where(behind.c.conversation_id == bindparam("of_conversation"))
        .scalar_subquery()
    )
    return head, queued


@functools.cache
def _sends_statement() -> Select[Any]:
    """The columns of a message with its account and contact (`_SENT`), the id of the
    message it replies to, and when the customer last wrote. Built once: its aliases and
    subqueries cost more to build than the statement costs to run."""
    replied, inbound = aliased(Message), aliased(Message)
    reply_to = (
        select(replied.channel_message_id)
        .where(replied.id == Message.reply_to_id)
        .scalar_subquery()
    )
    # The latest, not max(): walking `ix_messages_inbound_time` back from the newest stops at
    # the first of the customer's, where max() with the sender's test read them all.
    last_customer_at = (
        select(inbound.created_at)
        .where(
            inbound.conversation_id == Message.conversation_id,
            inbound.direction == "in",
            inbound.sender == "customer",
        )
        .order_by(inbound.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(*(c for shape in _SENT for c in shape.columns), reply_to, last_customer_at)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(Account, Account.id == Message.account_id)
        .join(Contact, Contact.id == Conversation.contact_id)
    )


@functools.cache
def _delivery_statement() -> Select[Any]:
    """What the claimed row (`message_id`) sends: `_sends_statement`'s columns."""
    return _sends_statement().where(Message.id == bindparam("message_id"))


@functools.cache
def _claimed_statement() -> Select[Any]:
    """What `_claim_head_statement` returned and `_delivery_statement` reads, for a claim
    made earlier in the same transaction: the conversation's head row if it is held until
    this claim's own `hold_until` (no other claim sets that time), with the outbox row's id,
    attempts and how many rows the conversation has queued, after `_sends_statement`'s."""
    columns = OUTBOX.c
    head, queued = _head_and_queued()
    hold_until = bindparam("hold_until", type_=columns.locked_until.type)
    return (
        _sends_statement()
        .add_columns(columns.id, columns.attempts, queued)
        .join(OUTBOX, columns.message_id == Message.id)
        .where(columns.id == head, columns.locked_until == hold_until)
    )


async def mark_sent(
    session: AsyncSession,
    *,
    outbox_id: int,
    message_id: int,
    channel_message_id: str | None,
    commits: bool = False,
) -> None:
    """Record a send: its outbox row goes, its message is `sent`.

    On PostgreSQL this is one statement (the delete rides along as a data-modifying WITH,
    which runs whether or not the update reads it), so a session in autocommit mode commits
    it in one round trip: the only database work between the channel's answer and the
    record of the send. Elsewhere two statements, committed by the caller, in one trip to
    SQLite's thread (the delete rides with the update, `store.db.defers_next_statement`);
    with `commits` (the caller commits right after), the COMMIT goes with them too
    (`store.db.ends_with_next_statement`).
    """
    values = {
        "outbox_id": outbox_id,
        "message_id": message_id,
        "channel_message_id": channel_message_id,
        "now": utcnow(),
    }
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(_sent_statement(together=True), values)
        return
    defers_next_statement(connection)
    await connection.execute(_gone_statement(), values)
    if commits:
        ends_with_next_statement(connection)
    await connection.execute(_sent_statement(together=False), values)


def mark_sent_steps(
    direct: DirectWrites, *, outbox_id: int, message_id: int, channel_message_id: str | None
) -> list[Step]:
    """`mark_sent`'s two statements on SQLite, as steps of a direct transaction
    (`store.direct`)."""
    values = {
        "outbox_id": outbox_id,
        "message_id": message_id,
        "channel_message_id": channel_message_id,
        "now": utcnow(),
    }
    gone = direct.prepared("outbox gone", _gone_statement)
    sent = direct.prepared("sent", functools.partial(_sent_statement, together=False))
    return [step(gone, values), step(sent, values)]


@functools.cache
def _gone_statement() -> Delete:
    """Built once, as Core (as `_sent_statement`): every send is recorded so."""
    return delete(OUTBOX).where(OUTBOX.c.id == bindparam("outbox_id"))


@functools.cache
def _sent_statement(*, together: bool) -> Update:
    """The message's move to `sent`; `together`: with its outbox row's delete as a WITH."""
    sent = (
        update(MESSAGES)
        .where(MESSAGES.c.id == bindparam("message_id"), MESSAGES.c.status == "queued")
        .values(
            status="sent",
            channel_message_id=bindparam("channel_message_id"),
            updated_at=bindparam("now"),
        )
    )
    return sent.add_cte(_gone_statement().cte("gone")) if together else sent


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
    session: AsyncSession, *, outbox_id: int, at: datetime, error: str | None, count: bool = True
) -> None:
    """Put the row back until `at`; `count` it as an attempt, and note `error` on the message.
    Uncounted: a send that never reached the channel (its account's rate said later)."""
    attempts = Outbox.attempts + 1 if count else Outbox.attempts
    await session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id)
        .values(attempts=attempts, next_attempt_at=at, locked_until=None)
    )
    if error is None:
        return
    message_id = select(Outbox.message_id).where(Outbox.id == outbox_id).scalar_subquery()
    await session.execute(
        update(Message).where(Message.id == message_id).values(error=error, updated_at=utcnow())
    )


async def requeue_reported(
    session: AsyncSession, *, outbox_id: int, message_id: int, at: datetime, error: str
) -> None:
    """Send a message again that the channel reported failed with a retryable error: it is
    `queued` again, with no channel id, so a repeated report of the old send finds nothing and
    cannot queue it a second time."""
    await schedule_retry(session, outbox_id=outbox_id, at=at, error=None)
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "failed")
        .values(status="queued", channel_message_id=None, error=error, updated_at=utcnow())
    )


async def queue_reported_failure(
    session: AsyncSession, *, message_id: int, conversation_id: int, reported_failures: int
) -> None:
    """Hand a sent message that the channel reported failed to delivery, which reads the
    report's error and sends it again or leaves it failed. Its earlier reported failures count
    as attempts, so a message that keeps failing is not sent forever.

    Args:
        reported_failures: the failures the channel reported for it so far, this one included.
    """
    await insert_ignore(
        session,
        Outbox,
        {
            "message_id": message_id,
            "conversation_id": conversation_id,
            "attempts": reported_failures - 1,
            "next_attempt_at": utcnow(),
            "locked_until": None,
            "created_at": utcnow(),
        },
        ["message_id"],
    )


async def release_holds(session: AsyncSession) -> None:
    """Free every held outbox row. Only for the embedded mode, where one process holds them
    all: after a crash its rows would otherwise wait out their hold before being sent."""
    await session.execute(update(Outbox).values(locked_until=None))
