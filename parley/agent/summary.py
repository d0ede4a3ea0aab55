"""Summarising a conversation's older turns, for the `local` context strategy and for
pruning the others' upstream context (`agent.pruning`).

The summary is asked of the same model in a call of its own (`store: false`: nothing of it
needs to live upstream) and kept on `conversations.summary`, marked with the last message it
covers (see `store.queries.history`). It is recomputed only when the history is over budget.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.context import (
    entry_tokens,
    estimate_tokens,
    item_tokens,
    split_newest,
    summary_item,
)
from parley.agent.llm import LLM
from parley.store.queries.history import History, HistoryEntry, save_summary

log = structlog.get_logger(__name__)

SUMMARY_INSTRUCTIONS = (
    "You summarise a customer-service chat for the assistant that continues it. "
    "Write a concise summary (a few short sentences or bullet points) of what the customer "
    "wants, the facts they gave (names, orders, dates, preferences), what was answered or "
    "promised, and what is still open. Keep the customer's language. Output only the summary."
)
MIN_SUMMARY_CHARS = 80
"""Even a tiny budget keeps this much of a summary: a few words are worth more than none."""
_SPEAKERS = {"user": "Customer", "assistant": "Assistant"}


class Summarizer:
    def __init__(
        self, llm: LLM, sessions: async_sessionmaker[AsyncSession], *, model: str, budget: int
    ) -> None:
        self._llm = llm
        self._sessions = sessions
        self._model = model
        self._budget = budget

    async def fold(
        self,
        *,
        conversation_id: int,
        history: History,
        budget: int,
        keep_tokens: int,
        extra: dict[str, Any],
        keep_items: int | None = None,
    ) -> History:
        """Summarise every message older than the newest ones that fit in `keep_tokens`
        (and number at most `keep_items`), with the summary so far, store it, and return the
        history that is left: within `budget` tokens, the summary cut to what the kept
        messages leave."""
        older, kept = split_newest(history.entries, keep_tokens)
        if keep_items is not None and len(kept) > keep_items:
            cut = len(kept) - keep_items
            older, kept = older + kept[:cut], kept[cut:]
        if not older:
            return history
        room = budget - sum(entry_tokens(e) for e in kept) - item_tokens(summary_item(""))
        text = await self._summarise(history.summary, older, extra)
        # A summary that runs long is cut: the messages kept beside it must still fit.
        text = text[: max(MIN_SUMMARY_CHARS, room * 4)]
        through = older[-1].sequence_no
        async with self._sessions() as session:
            await save_summary(
                session, conversation_id=conversation_id, summary=text, through=through
            )
            await session.commit()
        log.info(
            "agent.history_summarised",
            summarised=len(older),
            kept=len(kept),
            summary_through=through,
            summary_tokens=estimate_tokens(text),
        )
        return History(summary=text, summary_through=through, entries=kept)

    async def _summarise(
        self, summary: str | None, older: list[HistoryEntry], extra: dict[str, Any]
    ) -> str:
        # The summariser gets at most one budget of the older messages (the newest of them):
        # anything before those is already in the summary so far, or lost to it.
        _, recent = split_newest(older, self._budget)
        recent = recent or older[-1:]
        transcript = "\n".join(f"{_SPEAKERS[e.role]}: {e.text}" for e in recent)
        parts = [f"Summary so far:\n{summary}"] if summary else []
        parts.append(f"Conversation to summarise:\n{transcript}")
        response = await self._llm.respond(
            model=self._model,
            instructions=SUMMARY_INSTRUCTIONS,
            input=[{"role": "user", "content": "\n\n".join(parts)}],
            store=False,
            **extra,
        )
        return response.text.strip() or transcript
