"""What the channel reports about the messages Parley sent: sent, delivered, read, failed."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Update, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import StatusUpdate
from parley.store.db import defers_next_statement
from parley.store.direct import DirectWrites, Stale, Step, many
from parley.store.models import ACCOUNTS, MESSAGES, Message, utcnow
from parley.store.queries.outbox import queue_reported_failure
from parley.store.queries.pairs import pair_in, pair_params

# A status only moves forward: Meta may deliver "read" before "delivered", or twice.
STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "read": 3, "played": 4}


@dataclass
class _Sent:
    """The columns of an outbound message that a status report moves."""

    id: int
    conversation_id: int
    status: str
    error: str | None
    meta: dict[str, Any]
    seen: tuple[str, datetime]
    """Its status and update time as read: a direct transaction moves it only if unchanged."""


async def apply_statuses(session: AsyncSession, *, statuses: list[StatusUpdate]) -> int:
    """Move Parley's outbound messages forward by the channel's reports, in the reports' order;
    returns how many reports moved one.

    Unknown ids (messages sent by other tools on the same number) are ignored. One SELECT for
    the batch, one UPDATE per message moved (sent together), however many reports name it; on
    SQLite the UPDATEs go to the database with the transaction's next statement or COMMIT.
    """
    return sum(await advance_statuses(session, statuses=statuses))


async def advance_statuses(session: AsyncSession, *, statuses: list[StatusUpdate]) -> list[bool]:
    """`apply_statuses`, telling for each report whether it moved its message."""
    if not statuses:
        return []
    connection = await session.connection()
    rows = await connection.execute(_named_statement(), _named_params(statuses))
    moved, changed = _advance_all(statuses, _sent(rows))
    for message in changed:
        if message.status == "failed" and message.seen[0] != "failed":
            await queue_reported_failure(
                session,
                message_id=message.id,
                conversation_id=message.conversation_id,
                reported_failures=len(message.meta.get("reported_failures", [])),
            )
    if changed:
        # Nothing reads its outcome: on SQLite it rides with the transaction's next trip (the
        # filer's removal of the inbox rows and COMMIT) instead of taking one of its own.
        defers_next_statement(connection)
        await connection.execute(_move_statement(guarded=False), _moves(changed))
    return moved


async def advance_statuses_directly(
    direct: DirectWrites, *, statuses: list[StatusUpdate]
) -> tuple[list[bool], list[Step]]:
    """`advance_statuses` on SQLite without a session, for reports that are not failures
    (a failure also queues its message for delivery: `advance_statuses` files those): the
    messages are read now, and the moves come back as a step for the caller's transaction.
    A message changed by another transaction in between is not moved over: the step's guard
    refuses, and the caller's whole transaction raises `Stale`."""
    assert not any(s.status == "failed" for s in statuses), "failures go through a session"
    if not statuses:
        return [], []
    named = direct.prepared("statuses named", _named_statement)
    rows = await direct.read(named, _named_params(statuses))
    moved, changed = _advance_all(statuses, _sent(rows))
    if not changed:
        return moved, []
    moves = direct.prepared("statuses moved", lambda: _move_statement(guarded=True))
    step = many(moves, _moves(changed))
    step.guard = (len(changed), _stale)
    return moved, [step]


def _stale(moved: int) -> Stale:
    return Stale(f"{moved} messages moved by status reports, others changed since read")


def _named_params(statuses: list[StatusUpdate]) -> dict[str, list[Any]]:
    return {
        **pair_params({(s.channel, s.account_external_id) for s in statuses}),
        "channel_message_ids": sorted({s.channel_message_id for s in statuses}),
    }


def _sent(rows: Iterable[Sequence[Any]]) -> dict[tuple[str, str, str], _Sent]:
    """The outbound messages read, by (channel, account, channel id)."""
    return {
        (channel, account, mid or ""): _Sent(
            id_, conversation_id, status, error, meta or {}, (status, updated_at)
        )
        for channel, account, mid, id_, conversation_id, status, error, meta, updated_at in rows
    }


def _advance_all(
    statuses: list[StatusUpdate], sent: dict[tuple[str, str, str], _Sent]
) -> tuple[list[bool], list[_Sent]]:
    """Each report applied in order to the messages `sent`: whether it moved its message, and
    the messages moved."""
    moved: list[bool] = []
    changed: dict[int, _Sent] = {}
    for report in statuses:
        message = sent.get((report.channel, report.account_external_id, report.channel_message_id))
        moved.append(message is not None and _advance(message, report))
        if message is not None and moved[-1]:
            changed[message.id] = message
    return moved, list(changed.values())


def _moves(changed: list[_Sent]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "moved_id": m.id,
            "new_status": m.status,
            "new_error": m.error,
            "new_meta": m.meta,
            "now": now,
            "seen_status": m.seen[0],
            "seen_at": m.seen[1],
        }
        for m in changed
    ]


@functools.cache
def _move_statement(*, guarded: bool) -> Update:
    """Built once: every batch of status reports runs it (one row per message moved);
    `guarded`: only if the message is as it was read."""
    moved = MESSAGES.c.id == bindparam("moved_id")
    if guarded:
        moved = and_(
            moved,
            MESSAGES.c.status == bindparam("seen_status"),
            MESSAGES.c.updated_at == bindparam("seen_at", type_=MESSAGES.c.updated_at.type),
        )
    return (
        update(MESSAGES)
        .where(moved)
        .values(
            status=bindparam("new_status"),
            error=bindparam("new_error"),
            meta=bindparam("new_meta", type_=MESSAGES.c.meta.type),
            updated_at=bindparam("now"),
        )
    )


@functools.cache
def _named_statement() -> Select[Any]:
    """Built once, as Core: every batch of status reports reads the messages it names, as
    plain rows (the ORM's execution path cost more than the read), with their accounts'
    names in the same statement. Each account is found by its name's index, its messages by
    the (account, channel id) index; a message of one named account with the channel id of
    another's report is left out by `_sent`'s key."""
    messages, accounts = MESSAGES.c, ACCOUNTS.c
    return (
        select(
            accounts.channel,
            accounts.external_id,
            messages.channel_message_id,
            messages.id,
            messages.conversation_id,
            messages.status,
            messages.error,
            messages.meta,
            messages.updated_at,
        )
        .join_from(MESSAGES, ACCOUNTS, accounts.id == messages.account_id)
        .where(
            pair_in(accounts.channel, accounts.external_id),
            messages.channel_message_id.in_(bindparam("channel_message_ids", expanding=True)),
            messages.direction == "out",
        )
    )


def _advance(message: Message | _Sent, report: StatusUpdate) -> bool:
    if report.status == "failed":
        if message.status == "failed":
            return False
        message.status = "failed"
        message.error = _status_error(report)
        # Kept for delivery, which reads the channel's codes and may send the message again.
        failures = [
            *message.meta.get("reported_failures", []),
            {
                "channel_message_id": report.channel_message_id,
                "at": report.timestamp.isoformat(),
                "errors": [dict(error) for error in report.errors],
            },
        ]
        message.meta = {**message.meta, "reported_failures": failures}
        return True
    new_rank = STATUS_RANK.get(report.status)
    if new_rank is None or message.status == "failed":
        return False
    if new_rank <= STATUS_RANK.get(message.status, -1):
        return False
    message.status = report.status
    message.meta = {**message.meta, f"{report.status}_at": report.timestamp.isoformat()}
    return True


def _status_error(report: StatusUpdate) -> str:
    if not report.errors:
        return "failed (no reason given)"
    first = report.errors[0]
    details = (first.get("error_data") or {}).get("details") if isinstance(first, dict) else None
    parts = [str(first.get("code", "")), str(first.get("title") or first.get("message") or "")]
    if details:
        parts.append(str(details))
    return ": ".join(p for p in parts if p)
