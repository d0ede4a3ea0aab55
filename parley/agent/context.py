"""The agent's memory as items for the Responses API: budgets, history items, seeds.

Pure functions; the strategies that use them are in `agent.strategies`, the summariser in
`agent.summary`. Tokens are estimated, not counted: ceil(chars / 4) is close enough for a
budget and needs no tokenizer for every model a compatible server may run.
"""

from __future__ import annotations

import math
from typing import Any

from parley.agent.limiter import IMAGE_TOKENS
from parley.store.queries.history import History, HistoryEntry

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
PREVIOUS_RESPONSE_NOT_FOUND = "previous_response_not_found"
MAX_SEED_ITEMS = 20
"""`conversations.create` takes at most 20 items."""
ITEM_OVERHEAD = 4
"""Tokens a message costs besides its text (role, framing)."""

Item = dict[str, Any]


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def item_tokens(item: Item) -> int:
    content = item.get("content")
    if isinstance(content, str):
        return ITEM_OVERHEAD + estimate_tokens(content)
    if isinstance(content, list):
        return ITEM_OVERHEAD + sum(_part_tokens(part) for part in content)
    return ITEM_OVERHEAD


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    if part.get("type") == "input_image":
        return IMAGE_TOKENS
    text = part.get("text")
    return estimate_tokens(text) if isinstance(text, str) else 0


def items_tokens(items: list[Item]) -> int:
    return sum(item_tokens(item) for item in items)


def entry_tokens(entry: HistoryEntry) -> int:
    return ITEM_OVERHEAD + estimate_tokens(entry.text)


def history_tokens(history: History) -> int:
    summary = item_tokens(summary_item(history.summary)) if history.summary else 0
    return summary + sum(entry_tokens(e) for e in history.entries)


def split_newest(
    entries: list[HistoryEntry], budget: int
) -> tuple[list[HistoryEntry], list[HistoryEntry]]:
    """(older, newest): the newest entries whose tokens fit in `budget`, and the rest."""
    used = 0
    cut = len(entries)
    while cut > 0 and used + entry_tokens(entries[cut - 1]) <= budget:
        used += entry_tokens(entries[cut - 1])
        cut -= 1
    return entries[:cut], entries[cut:]


def summary_item(summary: str) -> Item:
    return {
        "role": "developer",
        "content": f"Summary of the earlier conversation with this customer:\n{summary}",
    }


def message_item(entry: HistoryEntry) -> Item:
    return {"role": entry.role, "content": entry.text}


def context_items(history: History) -> list[Item]:
    """The whole history as input: the summary first, then the messages after it."""
    items = [summary_item(history.summary)] if history.summary else []
    return items + [message_item(e) for e in history.entries]


def seed_items(history: History, budget: int, max_items: int | None = None) -> list[Item]:
    """What a new remote conversation or chain starts from: the summary (when it fits) and
    the newest messages within `budget` tokens and `max_items` items."""
    lead = [summary_item(history.summary)] if history.summary else []
    if items_tokens(lead) > budget:
        lead = []
    room = budget - items_tokens(lead)
    _, newest = split_newest(history.entries, room)
    if max_items is not None:
        keep = max(0, max_items - len(lead))
        newest = newest[max(0, len(newest) - keep) :]
    return lead + [message_item(e) for e in newest]
