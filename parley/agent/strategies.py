"""How the model remembers, `AgentConfig.context` (PARLEY_CONTEXT), and each way's recovery:
- `conversation`: one upstream conversation per Parley conversation; only new input is sent.
- `previous_response`: each turn chains on the last stored response id; only new input.
- `local`: Parley sends its own history within `context_tokens`, older turns summarised.
A lost upstream conversation or response is replaced by one seeded from the local history,
and "context length exceeded" is retried once (`truncation: "auto"`, or a fresh summary).
Upstream state that grew past `max_input_tokens` is replaced the same way, with a summary of
the older turns (`agent.pruning`), before it costs more.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.context import (
    CONTEXT_LENGTH_EXCEEDED,
    MAX_SEED_ITEMS,
    PREVIOUS_RESPONSE_NOT_FOUND,
    Item,
    context_items,
    history_tokens,
    items_tokens,
    seed_items,
)
from parley.agent.llm import LLM
from parley.agent.pruning import Pruner
from parley.agent.summary import Summarizer
from parley.agent.tool_loop import ToolLoop
from parley.agent.turn_types import AgentConfig, TurnRequest, TurnResult
from parley.errors import LLMError
from parley.store.db import reading
from parley.store.queries.history import History, load_history
from parley.store.queries.turns import set_remote_conversation

log = structlog.get_logger(__name__)


class Strategies:
    def __init__(
        self,
        llm: LLM,
        config: AgentConfig,
        sessions: async_sessionmaker[AsyncSession],
        loop: ToolLoop,
    ) -> None:
        self._llm = llm
        self._config = config
        self._sessions = sessions
        self._loop = loop
        self._summarizer = Summarizer(
            llm, sessions, model=config.model, budget=config.context_tokens
        )
        self._pruner = Pruner(config, self._summarizer, self._history)

    async def conversation_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        remote = request.remote_conversation_id
        if remote and self._pruner.due(request):
            remote = await self._pruned_remote(request, params, remote)
        remote = remote or await self._new_remote(request, params)
        try:
            return await self._respond_fitting(request, {**params, "conversation": remote})
        except LLMError as exc:
            if exc.status != 404:
                raise
        # The upstream lost or expired the conversation: start a new one from our own
        # history and retry once.
        log.warning("agent.remote_conversation_lost", remote_conversation_id=remote)
        remote = await self._new_remote(request, params)
        return await self._respond_fitting(request, {**params, "conversation": remote})

    async def chained_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        previous = request.previous_response_id
        if previous and self._pruner.due(request):
            # A fresh chain from a summary and the recent turns; the turn's outcome stores
            # its answer as the chain's new end.
            seed = await self._pruner.seed(request, params)
            self._pruner.log_pruned(request, seed, replaced_response_id=previous)
            return await self._respond_fitting(request, {**params, "input": seed + params["input"]})
        if previous:
            try:
                return await self._respond_fitting(
                    request, {**params, "previous_response_id": previous}
                )
            except LLMError as exc:
                if not _response_lost(exc):
                    raise
            log.warning("agent.previous_response_lost", previous_response_id=previous)
        # A fresh chain (first turn, or the old one is gone upstream): it starts from our own
        # history, sent as input this once; later turns chain on this answer.
        history = await self._history(request)
        seed = seed_items(history, self._seed_budget(params))
        return await self._respond_fitting(request, {**params, "input": seed + params["input"]})

    async def local_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        # Nothing is kept upstream: the history goes with every turn, from our store.
        params = {**params, "store": False}
        budget = self._seed_budget(params)
        history = await self._history(request)
        if history_tokens(history) > budget:
            # Half the budget for the newest messages, the rest for the summary, so the
            # summary is not recomputed on every turn.
            history = await self._fold(request, params, history, budget, keep_tokens=budget // 2)
        try:
            return await self._loop.respond(
                request, {**params, "input": context_items(history) + params["input"]}
            )
        except LLMError as exc:
            if exc.code != CONTEXT_LENGTH_EXCEEDED:
                raise
        # Our estimate was short for this model: summarise everything and retry once.
        log.warning("agent.context_length_exceeded", strategy="local")
        history = await self._fold(request, params, history, budget, keep_tokens=0)
        return await self._loop.respond(
            request, {**params, "input": context_items(history) + params["input"]}
        )

    def _seed_budget(self, params: dict[str, Any]) -> int:
        """Tokens left for history once the new input is counted."""
        return max(0, self._config.context_tokens - items_tokens(params["input"]))

    async def _history(self, request: TurnRequest) -> History:
        if request.fresh:  # nothing said yet: a read would only hold the store's connection
            return History()
        # Read and closed before the model is called: no transaction spans an LLM call.
        async with reading(self._sessions) as session:
            return await load_history(session, conversation_id=request.conversation_id)

    async def _fold(
        self,
        request: TurnRequest,
        params: dict[str, Any],
        history: History,
        budget: int,
        *,
        keep_tokens: int,
    ) -> History:
        return await self._summarizer.fold(
            conversation_id=request.conversation_id,
            history=history,
            budget=budget,
            keep_tokens=keep_tokens,
            extra={"safety_identifier": params["safety_identifier"]},
        )

    async def _new_remote(
        self,
        request: TurnRequest,
        params: dict[str, Any],
        seed: list[Item] | None = None,
        replaces: str | None = None,
    ) -> str:
        # Seeded from our own history: empty on a first message, the recent past when the
        # upstream lost the old conversation (or the strategy was switched); a pruned one
        # comes with its seed.
        if seed is None:
            history = await self._history(request)
            seed = seed_items(history, self._seed_budget(params), MAX_SEED_ITEMS)
        remote = await self._llm.create_conversation(
            metadata={"parley_conversation_id": str(request.conversation_id)}, items=seed
        )
        log.info(
            "agent.remote_conversation_created", remote_conversation_id=remote, seeded=len(seed)
        )
        # Stored at once: a turn that fails later must not leave a second remote conversation.
        # (This clears the last turn's tokens too, so a redone turn does not prune again.)
        async with self._sessions() as session:
            await set_remote_conversation(
                session,
                conversation_id=request.conversation_id,
                remote_id=remote,
                replaced=replaces,
                commits=True,
            )
            await session.commit()
        return remote

    async def _pruned_remote(self, request: TurnRequest, params: dict[str, Any], old: str) -> str:
        """A fresh upstream conversation for a chat whose old one grew past the threshold,
        or the old one when no new one can be made: pruning never costs the customer a turn."""
        seed = await self._pruner.seed(request, params, max_items=MAX_SEED_ITEMS)
        try:
            remote = await self._new_remote(request, params, seed, replaces=old)
        except LLMError as exc:
            log.warning("agent.prune_failed", reason=str(exc), remote_conversation_id=old)
            return old
        self._pruner.log_pruned(request, seed, replaced_remote_conversation_id=old)
        return remote

    async def _respond_fitting(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        """A turn on upstream state; if that state outgrew the model's window, retry once
        letting the upstream drop the oldest items."""
        try:
            return await self._loop.respond(request, params)
        except LLMError as exc:
            if exc.code != CONTEXT_LENGTH_EXCEEDED:
                raise
        log.warning("agent.context_length_exceeded", strategy=self._config.context)
        return await self._loop.respond(request, {**params, "truncation": "auto"})


def _response_lost(exc: LLMError) -> bool:
    """The chained-on response no longer exists upstream (deleted, expired, or never stored)."""
    return exc.code == PREVIOUS_RESPONSE_NOT_FOUND and exc.status in (400, 404)
