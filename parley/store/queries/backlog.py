"""How much work waits: the figures the backlog gauges show and autoscaling reads.

Two aggregate reads on indexed columns (`ix_messages_status_created`, the inbox's primary
key); run every few seconds by one task per process, never per scrape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Conversation, InboxEntry, Message, utcnow


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: int
    """Inbound messages of active conversations still `received` (not answered yet)."""
    oldest_waiting_s: float
    """How long the oldest of them has waited; 0 when none waits."""
    inbox: int
    """Acknowledged webhook bodies the filer has not filed yet (unreadable ones excluded)."""
    oldest_inbox_s: float


async def read_backlog(session: AsyncSession) -> Backlog:
    now = utcnow()
    waiting, oldest = (
        await session.execute(
            select(func.count(), func.min(Message.created_at))
            .select_from(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.status == "received",
                Conversation.status == "active",
                Conversation.mode == "agent",
            )
        )
    ).one()
    inbox, oldest_inbox = (
        await session.execute(
            select(func.count(), func.min(InboxEntry.received_at)).where(
                InboxEntry.failed_at.is_(None)
            )
        )
    ).one()
    return Backlog(
        waiting=int(waiting or 0),
        oldest_waiting_s=_age(now, oldest),
        inbox=int(inbox or 0),
        oldest_inbox_s=_age(now, oldest_inbox),
    )


def _age(now: datetime, then: datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None and now.tzinfo is not None:  # SQLite gives naive UTC
        then = then.replace(tzinfo=now.tzinfo)
    return max((now - then).total_seconds(), 0.0)
