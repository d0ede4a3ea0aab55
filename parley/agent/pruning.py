"""Pruning a long chat's upstream context, for `conversation` and `previous_response`.

Their upstream state grows with every turn, and every turn pays for all of it as input. Once
a turn's input (the upstream's `usage.input_tokens`, kept on the conversation row as
`last_input_tokens`) passed `AgentConfig.max_input_tokens`, the next turn starts afresh: a new
upstream conversation, or a chain without `previous_response_id`, seeded with a summary of the
older turns and the recent ones verbatim from Parley's own store. A turn's input then stays
bounded however long the chat.

Never at the customer's expense: the summary is a `store: false` call of its own
(`agent.summary`); when it fails the seed holds the recent turns (and any earlier summary)
only, and the turn goes on. The old upstream conversation or response is left to retention;
`agent.context_pruned` logs its id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from parley.agent.context import Item, items_tokens, seed_items
from parley.agent.summary import Summarizer
from parley.agent.turn_types import AgentConfig, TurnRequest
from parley.errors import LLMError
from parley.store.queries.history import History

log = structlog.get_logger(__name__)

LoadHistory = Callable[[TurnRequest], Awaitable[History]]


class Pruner:
    def __init__(self, config: AgentConfig, summarizer: Summarizer, load: LoadHistory) -> None:
        self._config = config
        self._summarizer = summarizer
        self._load = load

    def due(self, request: TurnRequest) -> bool:
        """Whether this turn starts a fresh upstream context: decided from the conversation
        row the door loaded anyway, at no cost of its own."""
        limit = self._config.max_input_tokens
        return limit > 0 and (request.last_input_tokens or 0) > limit

    def log_pruned(self, request: TurnRequest, seed: list[Item], **replaced: str | None) -> None:
        """The old upstream id goes in the log: nothing else refers to it any more."""
        log.info(
            "agent.context_pruned",
            strategy=self._config.context,
            last_input_tokens=request.last_input_tokens,
            max_input_tokens=self._config.max_input_tokens,
            seeded=len(seed),
            seed_tokens=items_tokens(seed),
            **replaced,
        )

    async def seed(
        self, request: TurnRequest, params: dict[str, Any], *, max_items: int | None = None
    ) -> list[Item]:
        """What the fresh context starts from: the summary of the older turns, then the
        newest messages (half of the budget, at most `max_items` items with the summary)."""
        budget = self._budget(params)
        history = await self._load(request)
        try:
            history = await self._summarizer.fold(
                conversation_id=request.conversation_id,
                history=history,
                budget=budget,
                keep_tokens=budget // 2,
                keep_items=max_items - 1 if max_items is not None else None,
                extra={"safety_identifier": params["safety_identifier"]},
            )
        except LLMError as exc:
            # Better a fresh start that remembers only the recent turns than no answer.
            log.warning("agent.prune_summary_failed", reason=str(exc))
        return seed_items(history, budget, max_items)

    def _budget(self, params: dict[str, Any]) -> int:
        """Tokens of history the seed may carry: within the history budget, and within half
        the threshold, so that the fresh context has room to grow before the next prune."""
        room = min(self._config.context_tokens, self._config.max_input_tokens // 2)
        return max(0, room - items_tokens(params["input"]))
