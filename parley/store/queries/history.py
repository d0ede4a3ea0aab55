"""A conversation's own history, read for the agent: what it sends (`local`) or seeds a new
remote conversation or chain with (`conversation`, `previous_response`).

The running summary lives in `conversations.summary` with no schema of its own: its first
line is a marker, `[summary through #123]`, naming the last sequence_no it covers, so the
messages after it are exactly those the summary does not.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, and_, bindparam, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.media import MEDIA_KINDS, history_label, media_from_stored
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
    next turn's). Messages without text (reactions) and tool messages are left out too. A
    file stands as its label (``[image] caption``, ``[voice note] transcript``): its bytes
    went upstream once, in the turn that answered it.
    """
    stored = await session.scalar(_summary_statement(), {"conversation_id": conversation_id})
    summary, through = parse_summary(stored)
    rows = await session.execute(
        _entries_statement(),
        {"conversation_id": conversation_id, "through": through, "limit": limit},
    )
    entries = [
        HistoryEntry(sequence_no=seq, role=_ROLES[sender], text=read)
        for seq, sender, kind, text, meta in rows
        if (read := _entry_text(kind, text, meta))
    ]
    entries.reverse()
    return History(summary=summary, summary_through=through, entries=entries)


@functools.cache
def _summary_statement() -> Select[str | None]:
    """Built once, as `_entries_statement`: a turn that seeds or sends history reads both."""
    return select(Conversation.summary).where(Conversation.id == bindparam("conversation_id"))


@functools.cache
def _entries_statement() -> Select[tuple[int, str, str, str | None, Any]]:
    """The messages `load_history` reads, their values given at each execution: building the
    statement each time cost more than SQLite's answer, and left reference cycles (SQLAlchemy's
    expressions) for the garbage collector, whose pauses hold up the event loop."""
    return (
        select(Message.sequence_no, Message.sender, Message.kind, Message.text, Message.meta)
        .where(
            Message.conversation_id == bindparam("conversation_id"),
            Message.sequence_no > bindparam("through"),
            or_(Message.text.is_not(None), Message.kind.in_(sorted(MEDIA_KINDS))),
            Message.sender.in_(list(_ROLES)),
            not_(and_(Message.direction == "in", Message.status == "received")),
        )
        .order_by(Message.sequence_no.desc())
        .limit(bindparam("limit"))
    )


def _entry_text(kind: str, text: str | None, meta: dict[str, Any] | None) -> str | None:
    stored_media = meta.get("media") if isinstance(meta, dict) else None
    label = history_label(kind, media_from_stored(stored_media))
    if label is None:
        return text
    return f"{label} {text}" if text else label


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
