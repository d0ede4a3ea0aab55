"""What the channel reports about the messages Parley sent: sent, delivered, read, failed."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import StatusUpdate
from parley.store.db import defers_next_statement
from parley.store.models import MESSAGES, Message, utcnow
from parley.store.queries.customers import find_accounts
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
    sent = await _named(session, statuses)
    moved: list[bool] = []
    changed: dict[int, _Sent] = {}
    for report in statuses:
        message = sent.get((report.channel, report.account_external_id, report.channel_message_id))
        moved.append(message is not None and _advance(message, report))
        if message is None or not moved[-1]:
            continue
        changed[message.id] = message
        if report.status == "failed":
            await queue_reported_failure(
                session,
                message_id=message.id,
                conversation_id=message.conversation_id,
                reported_failures=len(message.meta.get("reported_failures", [])),
            )
    if changed:
        now = utcnow()
        connection = await session.connection()
        # Nothing reads its outcome: on SQLite it rides with the transaction's next trip (the
        # filer's removal of the inbox rows and COMMIT) instead of taking one of its own.
        defers_next_statement(connection)
        await connection.execute(
            _MOVE,
            [
                {
                    "moved_id": m.id,
                    "new_status": m.status,
                    "new_error": m.error,
                    "new_meta": m.meta,
                    "now": now,
                }
                for m in changed.values()
            ],
        )
    return moved


_MOVE = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("moved_id"))
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        meta=bindparam("new_meta", type_=MESSAGES.c.meta.type),
        updated_at=bindparam("now"),
    )
)
"""Built once: every batch of status reports runs it (one row per message moved)."""


async def _named(
    session: AsyncSession, statuses: list[StatusUpdate]
) -> dict[tuple[str, str, str], _Sent]:
    """The outbound messages `statuses` name, by (channel, account, channel id)."""
    accounts = await find_accounts(
        session, {(s.channel, s.account_external_id) for s in statuses}, create=False
    )
    keys = {
        (accounts[(s.channel, s.account_external_id)], s.channel_message_id)
        for s in statuses
        if (s.channel, s.account_external_id) in accounts
    }
    if not keys:
        return {}
    by_id = {id_: key for key, id_ in accounts.items()}
    connection = await session.connection()
    rows = await connection.execute(_named_statement(), pair_params(keys))
    return {
        (*by_id[account_id], mid or ""): _Sent(id_, conversation_id, status, error, meta or {})
        for account_id, mid, id_, conversation_id, status, error, meta in rows
    }


@functools.cache
def _named_statement() -> Select[Any]:
    """Built once, as Core on the session's connection: every batch of status reports reads
    the messages it names, as plain rows (the ORM's execution path cost more than the read)."""
    columns = MESSAGES.c
    return select(
        columns.account_id,
        columns.channel_message_id,
        columns.id,
        columns.conversation_id,
        columns.status,
        columns.error,
        columns.meta,
    ).where(pair_in(columns.account_id, columns.channel_message_id), columns.direction == "out")


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
