"""A turn's request parameters: its input, identity and tools, and which prompt answers.

With OPENAI_PROMPT_ID set, the dashboard prompt is asked for; when the upstream no longer has
it, the first call is made again with Parley's own prompt, and turns skip the dashboard prompt
for `DASHBOARD_PROMPT_RETRY_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import structlog

from parley.agent.context import CONTEXT_LENGTH_EXCEEDED
from parley.agent.llm import LLM, LLMResponse
from parley.agent.tools import ToolRegistry
from parley.agent.turn_types import AgentConfig, TurnRequest
from parley.errors import LLMError

log = structlog.get_logger(__name__)

DASHBOARD_PROMPT_RETRY_S = 300.0
"""After the upstream said OPENAI_PROMPT_ID is gone, how long turns skip asking it again."""


class TurnParams:
    def __init__(self, llm: LLM, config: AgentConfig, tools: ToolRegistry) -> None:
        self._llm = llm
        self._config = config
        self._tools = tools
        self._dashboard_missing_until = 0.0

    def build(self, request: TurnRequest) -> dict[str, Any]:
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

    async def first_call(
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


def _prompt_missing(exc: LLMError) -> bool:
    """The upstream refused OPENAI_PROMPT_ID itself: no such prompt or version, or retired."""
    return (
        exc.status in (400, 404, 410)
        and exc.code != CONTEXT_LENGTH_EXCEEDED
        and "prompt" in str(exc).lower()
    )
