"""One agent turn: the customer's new messages in, one answer out.

Every door (WhatsApp, Instagram, the Responses API) runs this same turn. It keeps no
transaction open while the model thinks; the caller stores the result.

How the model remembers is `AgentConfig.context` (PARLEY_CONTEXT):
- `conversation`: one upstream conversation per Parley conversation; only new input is sent.
- `previous_response`: each turn chains on the last stored response id; only new input.
- `local`: Parley sends its own history within `context_tokens`, older turns summarised.
A lost upstream conversation or response is replaced by one seeded from the local history,
and "context length exceeded" is retried once (`truncation: "auto"`, or a fresh summary).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.context import (
    CONTEXT_LENGTH_EXCEEDED,
    MAX_SEED_ITEMS,
    PREVIOUS_RESPONSE_NOT_FOUND,
    context_items,
    history_tokens,
    items_tokens,
    seed_items,
)
from parley.agent.llm import LLM, LLMResponse, OnDelta, ToolCall, Usage
from parley.agent.prompts import PromptChoice, PromptDefaults, choose_prompt
from parley.agent.summary import Summarizer
from parley.agent.tools import ToolContext, ToolEvent, ToolRegistry
from parley.errors import LLMError
from parley.store.models import Account, Contact, Conversation
from parley.store.queries.history import History, load_history
from parley.store.queries.turns import set_remote_conversation

log = structlog.get_logger(__name__)

DASHBOARD_PROMPT_RETRY_S = 300.0
"""After the upstream said OPENAI_PROMPT_ID is gone, how long turns skip asking it again."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    model: str
    instructions: str
    context: str = "conversation"
    context_tokens: int = 8000
    """Tokens of history `local` sends, and a seed for a replaced remote state may carry."""
    prompt_id: str | None = None
    prompt_version: str | None = None
    max_tool_steps: int = 5
    """Function-calling rounds in one turn before the agent must answer."""
    timezone: str = "UTC"
    identity_key: bytes = b"parley"
    """Keys the hash sent upstream as `safety_identifier`, so the raw number never leaves."""


@dataclass(frozen=True, slots=True)
class TurnRequest:
    conversation_id: int
    channel: str
    customer_key: str
    """The customer's stable identity (account and contact), hashed before it goes upstream."""
    inputs: list[str]
    """What the customer wrote, oldest first: each becomes one user message."""
    notes: list[str] = field(default_factory=list)
    """Facts for the agent about what the customer sent that it cannot read (an image…)."""
    remote_conversation_id: str | None = None
    previous_response_id: str | None = None
    user_id: int | None = None
    """The Responses API caller, when the turn comes through `/v1`."""
    # What only the Responses API sets:
    items: list[dict[str, Any]] | None = None
    """The new input as Responses API items (parts, images, function outputs), instead of
    `inputs`."""
    instructions: str | None = None
    """The caller's instructions, added after the agent's own (never replacing them)."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The caller's function tools: calls to them end the turn and go back to the caller."""
    tool_choice: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    """Model settings the caller chose (temperature, max_output_tokens), over the prompt's."""
    strategy: str | None = None
    """The context strategy for this turn, instead of the configured one."""
    on_delta: OnDelta | None = None
    """Streams the answer's text as it comes."""
    prompt: PromptChoice | None = None
    """Parley's prompt for this turn (`agent.prompts.choose_prompt`); None: the built-in one.
    With OPENAI_PROMPT_ID set, its variables go with the dashboard prompt, and it answers
    instead when the upstream no longer has that prompt."""


@dataclass(frozen=True, slots=True)
class TurnResult:
    text: str
    response_id: str
    model: str
    usage: Usage
    latency_ms: int
    prompt: str | None
    tool_events: tuple[ToolEvent, ...] = ()
    output: list[dict[str, Any]] = field(default_factory=list)
    """The last upstream response's output items (the Responses API returns them)."""
    status: str = "completed"
    incomplete_reason: str | None = None
    caller_calls: tuple[ToolCall, ...] = ()
    """Calls of the caller's own tools, for the caller to run and answer."""
    held: tuple[ToolEvent, ...] = ()
    """Parley's own calls made in the same step as `caller_calls`: their outputs must go
    upstream with the caller's answers."""


class Agent:
    def __init__(
        self,
        llm: LLM,
        config: AgentConfig,
        sessions: async_sessionmaker[AsyncSession],
        tools: ToolRegistry | None = None,
    ) -> None:
        self._llm = llm
        self._tools = tools or ToolRegistry()
        self._config = config
        self._sessions = sessions
        self._summarizer = Summarizer(
            llm, sessions, model=config.model, budget=config.context_tokens
        )
        self._dashboard_missing_until = 0.0

    @property
    def prompt_defaults(self) -> PromptDefaults:
        """The built-in prompt, for `choose_prompt`."""
        return PromptDefaults(
            self._config.instructions, self._config.model, timezone=self._config.timezone
        )

    async def prompt_for(
        self, conversation: Conversation, account: Account, contact: Contact | None
    ) -> PromptChoice:
        """The prompt for the conversation's next turn, in a short transaction of its own: it
        may record an A/B assignment, and must not stay open while the model thinks."""
        async with self._sessions() as session:
            prompt = await choose_prompt(
                session,
                conversation=conversation,
                account=account,
                contact=contact,
                defaults=self.prompt_defaults,
            )
            await session.commit()
        return prompt

    async def run_turn(self, request: TurnRequest) -> TurnResult:
        params = self._params(request)
        strategy = request.strategy or self._config.context
        if strategy == "local":
            return await self._local_turn(request, params)
        if strategy == "previous_response":
            return await self._chained_turn(request, params)
        return await self._conversation_turn(request, params)

    async def flagged(self, texts: list[str]) -> bool:
        return await self._llm.flagged(texts)

    # --- strategies --------------------------------------------------------------------
    async def _conversation_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        remote = request.remote_conversation_id or await self._new_remote(request, params)
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

    async def _chained_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        previous = request.previous_response_id
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

    async def _local_turn(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        # Nothing is kept upstream: the history goes with every turn, from our store.
        params = {**params, "store": False}
        budget = self._seed_budget(params)
        history = await self._history(request)
        if history_tokens(history) > budget:
            # Half the budget for the newest messages, the rest for the summary, so the
            # summary is not recomputed on every turn.
            history = await self._fold(request, params, history, budget, keep_tokens=budget // 2)
        try:
            return await self._respond(
                request, {**params, "input": context_items(history) + params["input"]}
            )
        except LLMError as exc:
            if exc.code != CONTEXT_LENGTH_EXCEEDED:
                raise
        # Our estimate was short for this model: summarise everything and retry once.
        log.warning("agent.context_length_exceeded", strategy="local")
        history = await self._fold(request, params, history, budget, keep_tokens=0)
        return await self._respond(
            request, {**params, "input": context_items(history) + params["input"]}
        )

    # --- helpers -----------------------------------------------------------------------
    def _params(self, request: TurnRequest) -> dict[str, Any]:
        items: list[dict[str, Any]] = (
            list(request.items)
            if request.items is not None
            else [{"role": "user", "content": text} for text in request.inputs]
        )
        if request.notes:
            items.append({"role": "developer", "content": " ".join(request.notes)})
        params: dict[str, Any] = {
            "input": items,
            "safety_identifier": self.safety_identifier(request.customer_key),
            "metadata": {
                "parley_conversation_id": str(request.conversation_id),
                "channel": request.channel,
            },
            "store": True,
        }
        tools = self._tools.definitions() + request.tools
        if tools:
            params["tools"] = tools
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        use_dashboard = time.monotonic() >= self._dashboard_missing_until
        params.update(self._prompt_params(request, dashboard=use_dashboard))
        return params

    def _prompt_params(self, request: TurnRequest, *, dashboard: bool) -> dict[str, Any]:
        """The prompt part of a request: OPENAI_PROMPT_ID's dashboard prompt (when set and
        `dashboard`), else Parley's own prompt; then the caller's instructions and settings."""
        choice = request.prompt
        params: dict[str, Any] = {}
        if self._config.prompt_id and dashboard:
            prompt: dict[str, Any] = {"id": self._config.prompt_id}
            if self._config.prompt_version:
                prompt["version"] = self._config.prompt_version
            if choice is not None and choice.variables:
                prompt["variables"] = dict(choice.variables)
            params["prompt"] = prompt
        elif choice is not None:
            params.update(choice.settings)
            params["model"] = choice.model
            params["instructions"] = choice.instructions
        else:
            params["model"] = self._config.model
            params["instructions"] = self._config.instructions
        if request.instructions:
            own = params.get("instructions")
            params["instructions"] = (
                f"{own}\n\n{request.instructions}" if own else request.instructions
            )
        params.update(request.settings)
        return params

    async def _first_call(
        self, request: TurnRequest, params: dict[str, Any]
    ) -> tuple[LLMResponse, dict[str, Any]]:
        """The turn's first model call. A dashboard prompt the upstream no longer has (deleted,
        or retired with OpenAI's prompt objects) must not cost the customer an answer: the
        call is made again, once, with Parley's own prompt."""
        try:
            return await self._llm.respond(request.on_delta, **params), params
        except LLMError as exc:
            if "prompt" not in params or not _prompt_missing(exc):
                raise
            log.warning(
                "agent.prompt_fallback",
                prompt_id=self._config.prompt_id,
                prompt_version=self._config.prompt_version,
                local_prompt=request.prompt.name if request.prompt else None,
                reason=str(exc),
            )
        self._dashboard_missing_until = time.monotonic() + DASHBOARD_PROMPT_RETRY_S
        params = {key: value for key, value in params.items() if key != "prompt"}
        params.update(self._prompt_params(request, dashboard=False))
        return await self._llm.respond(request.on_delta, **params), params

    def safety_identifier(self, customer_key: str) -> str:
        digest = hmac.new(self._config.identity_key, customer_key.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def _seed_budget(self, params: dict[str, Any]) -> int:
        """Tokens left for history once the new input is counted."""
        return max(0, self._config.context_tokens - items_tokens(params["input"]))

    async def _history(self, request: TurnRequest) -> History:
        # Read and closed before the model is called: no transaction spans an LLM call.
        async with self._sessions() as session:
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

    async def _new_remote(self, request: TurnRequest, params: dict[str, Any]) -> str:
        # Seeded from our own history: empty on a first message, the recent past when the
        # upstream lost the old conversation (or the strategy was switched).
        seed = seed_items(await self._history(request), self._seed_budget(params), MAX_SEED_ITEMS)
        remote = await self._llm.create_conversation(
            metadata={"parley_conversation_id": str(request.conversation_id)}, items=seed
        )
        log.info(
            "agent.remote_conversation_created", remote_conversation_id=remote, seeded=len(seed)
        )
        # Stored at once: a turn that fails later must not leave a second remote conversation.
        async with self._sessions() as session:
            await set_remote_conversation(
                session, conversation_id=request.conversation_id, remote_id=remote
            )
            await session.commit()
        return remote

    async def _respond_fitting(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        """A turn on upstream state; if that state outgrew the model's window, retry once
        letting the upstream drop the oldest items."""
        try:
            return await self._respond(request, params)
        except LLMError as exc:
            if exc.code != CONTEXT_LENGTH_EXCEEDED:
                raise
        log.warning("agent.context_length_exceeded", strategy=self._config.context)
        return await self._respond(request, {**params, "truncation": "auto"})

    async def _respond(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        """One model call, then the function-calling loop: run the tools the model asked for,
        send their outputs back, until it answers in text or the step limit is reached."""
        response, params = await self._first_call(request, params)
        usage, latency, events = response.usage, response.latency_ms, []
        held: list[ToolEvent] = []
        context = ToolContext(request.conversation_id, self._config.timezone, request.user_id)
        for _ in range(self._config.max_tool_steps):
            if not response.tool_calls:
                break
            if _for_caller(request, response):
                # The upstream wants an output for every call of this step: ours are run now
                # and held, to go up with the caller's outputs in its next request.
                mine = [c for c in response.tool_calls if c.name not in _caller_tools(request)]
                held = [ToolEvent(c, await self._tools.call(c, context)) for c in mine]
                events += held
                break
            outputs = [(c, await self._tools.call(c, context)) for c in response.tool_calls]
            events += [ToolEvent(call, output) for call, output in outputs]
            params = _follow_up(params, response, outputs)
            response = await self._llm.respond(request.on_delta, **params)
            usage, latency = _add(usage, response.usage), latency + response.latency_ms
        prompt = params.get("prompt")
        return TurnResult(
            text=response.text,
            response_id=response.response_id,
            model=response.model,
            usage=usage,
            latency_ms=latency,
            prompt=prompt["id"] if prompt else None,
            tool_events=tuple(events),
            output=response.output,
            status=response.status,
            incomplete_reason=response.incomplete_reason,
            caller_calls=tuple(c for c in response.tool_calls if c.name in _caller_tools(request)),
            held=tuple(held),
        )


def _caller_tools(request: TurnRequest) -> set[str]:
    return {str(tool.get("name")) for tool in request.tools}


def _for_caller(request: TurnRequest, response: LLMResponse) -> bool:
    """Whether the model called one of the caller's tools: the turn ends there, and the
    caller answers with `function_call_output` items in its next request."""
    return any(call.name in _caller_tools(request) for call in response.tool_calls)


def _follow_up(
    params: dict[str, Any], response: LLMResponse, outputs: list[tuple[ToolCall, str]]
) -> dict[str, Any]:
    """The next request of the loop, continuing the state the strategy keeps."""
    results = [
        {"type": "function_call_output", "call_id": call.call_id, "output": output}
        for call, output in outputs
    ]
    if "conversation" in params:  # the upstream conversation holds the calls already
        return {**params, "input": results}
    if params.get("store", True):  # chain on the response that made the calls
        return {**params, "previous_response_id": response.response_id, "input": results}
    calls = [
        {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
        for c, _ in outputs
    ]
    return {**params, "input": [*params["input"], *calls, *results]}


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )


def _response_lost(exc: LLMError) -> bool:
    """The chained-on response no longer exists upstream (deleted, expired, or never stored)."""
    return exc.code == PREVIOUS_RESPONSE_NOT_FOUND and exc.status in (400, 404)


def _prompt_missing(exc: LLMError) -> bool:
    """The upstream refused OPENAI_PROMPT_ID itself: no such prompt or version, or retired."""
    return (
        exc.status in (400, 404, 410)
        and exc.code != CONTEXT_LENGTH_EXCEEDED
        and "prompt" in str(exc).lower()
    )
