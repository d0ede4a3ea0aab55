"""The queue of upstream objects to delete: OpenAI conversations and stored responses of
conversations that expired or whose customer was erased.

Rows are written in the transaction that deletes the local rows, so nothing is forgotten when
the upstream is down or the process dies; the workers drain them (`worker.upstream_deleter`),
any number at once: a row is claimed with a short hold (and `FOR UPDATE SKIP LOCKED` on
PostgreSQL), and a row already queued is not queued twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import UpstreamDeletion, utcnow
from parley.store.queries.upsert import dialect_insert, dialect_of

CONVERSATION = "conversation"
RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class UpstreamObject:
    kind: str
    """``conversation`` or ``response``."""
    object_id: str


@dataclass(frozen=True, slots=True)
class ClaimedDeletion:
    id: int
    kind: str
    object_id: str
    attempts: int


async def queue_deletions(
    session: AsyncSession, *, objects: Iterable[UpstreamObject], reason: str
) -> int:
    """Queue `objects` for deletion upstream (one already queued stays as it is); returns how
    many were given."""
    now = utcnow()
    rows = [
        {
            "kind": o.kind,
            "object_id": o.object_id,
            "reason": reason,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for o in dict.fromkeys(objects)
    ]
    if not rows:
        return 0
    insert = dialect_insert(dialect_of(session))
    statement = insert(UpstreamDeletion).on_conflict_do_nothing(
        index_elements=["kind", "object_id"]
    )
    await session.execute(statement, rows)
    return len(rows)


async def claim_due(session: AsyncSession, *, limit: int, hold: timedelta) -> list[ClaimedDeletion]:
    """Take up to `limit` due rows and hold them for `hold`, so that another worker leaves
    them alone while this one calls the upstream (outside any transaction)."""
    now = utcnow()
    rows = list(
        await session.execute(
            select(
                UpstreamDeletion.id,
                UpstreamDeletion.kind,
                UpstreamDeletion.object_id,
                UpstreamDeletion.attempts,
            )
            .where(
                UpstreamDeletion.next_attempt_at <= now,
                or_(UpstreamDeletion.locked_until.is_(None), UpstreamDeletion.locked_until < now),
            )
            .order_by(UpstreamDeletion.next_attempt_at, UpstreamDeletion.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if rows:
        await session.execute(
            update(UpstreamDeletion)
            .where(UpstreamDeletion.id.in_([row[0] for row in rows]))
            .values(locked_until=now + hold)
        )
    return [ClaimedDeletion(*row) for row in rows]


async def mark_deleted(session: AsyncSession, *, ids: list[int]) -> None:
    if ids:
        await session.execute(delete(UpstreamDeletion).where(UpstreamDeletion.id.in_(ids)))


async def retry_later(session: AsyncSession, *, row_id: int, at: datetime, error: str) -> None:
    await session.execute(
        update(UpstreamDeletion)
        .where(UpstreamDeletion.id == row_id)
        .values(
            attempts=UpstreamDeletion.attempts + 1,
            next_attempt_at=at,
            locked_until=None,
            last_error=error[:2000],
        )
    )


async def release_deletion_holds(session: AsyncSession) -> None:
    """Free every held row. Only for the embedded mode, where one process holds them all:
    after a crash or a stop mid-batch its rows would otherwise wait out their hold."""
    await session.execute(update(UpstreamDeletion).values(locked_until=None))


async def pending_deletions(session: AsyncSession) -> int:
    """Rows still to delete upstream (due or waiting for a retry)."""
    count = await session.scalar(select(func.count()).select_from(UpstreamDeletion))
    return int(count or 0)


async def next_deletion_due(session: AsyncSession) -> datetime | None:
    return await session.scalar(select(func.min(UpstreamDeletion.next_attempt_at)))


def objects_of(
    *,
    remote_conversations: Iterable[str | None],
    responses: Iterable[str | None],
) -> list[UpstreamObject]:
    """The upstream objects named by these ids (None and empty ones left out), in order."""
    found = [UpstreamObject(CONVERSATION, c) for c in remote_conversations if c]
    found += [UpstreamObject(RESPONSE, r) for r in responses if r]
    return list(dict.fromkeys(found))
