"""A conversation's own history, read for the agent: what it sends (`local`) or seeds a new
remote conversation or chain with (`conversation`, `previous_response`).

The running summary lives in `conversations.summary` with no schema of its own: its first
line is a marker, `[summary through #123]`, naming the last sequence_no it covers, so the
messages after it are exactly those the summary does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import and_, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Conversation, Message

HISTORY_LIMIT = 400
"""The newest messages read at most: far more than any token budget lets through."""

_MARKER = re.compile(r"^\[summary through #(\d+)\]\n?")
_ROLES: dict[str, Literal["user", "assistant"]] = {
    "customer": "user",
    "agent": "assistant",
    "operator": "assistant",
    "system": "assistant",
}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    sequence_no: int
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class History:
    """The summary (if any) and the messages after it, oldest first."""

    summary: str | None = None
    summary_through: int = 0
    entries: list[HistoryEntry] = field(default_factory=list)


async def load_history(
    session: AsyncSession, *, conversation_id: int, limit: int = HISTORY_LIMIT
) -> History:
    """Everything said in the conversation that a turn has not yet to answer.

    Inbound messages still `received` are left out: they are this turn's new input (or the
    next turn's). Messages without text (media, reactions) and tool messages are left out too.
    """
    stored = await session.scalar(
        select(Conversation.summary).where(Conversation.id == conversation_id)
    )
    summary, through = parse_summary(stored)
    rows = await session.execute(
        select(Message.sequence_no, Message.sender, Message.text)
        .where(
            Message.conversation_id == conversation_id,
            Message.sequence_no > through,
            Message.text.is_not(None),
            Message.sender.in_(list(_ROLES)),
            not_(and_(Message.direction == "in", Message.status == "received")),
        )
        .order_by(Message.sequence_no.desc())
        .limit(limit)
    )
    entries = [
        HistoryEntry(sequence_no=seq, role=_ROLES[sender], text=text)
        for seq, sender, text in rows
        if text
    ]
    entries.reverse()
    return History(summary=summary, summary_through=through, entries=entries)


async def save_summary(
    session: AsyncSession, *, conversation_id: int, summary: str, through: int
) -> None:
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(summary=f"[summary through #{through}]\n{summary}")
    )


def parse_summary(stored: str | None) -> tuple[str | None, int]:
    """The summary text and the last sequence_no it covers (0: none, or written by hand)."""
    if not stored:
        return None, 0
    match = _MARKER.match(stored)
    if match is None:
        return stored, 0
    return stored[match.end() :] or None, int(match.group(1))
