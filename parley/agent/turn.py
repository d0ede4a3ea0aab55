"""One agent turn: the customer's new messages in, one answer out.

Every door (WhatsApp, Instagram, the Responses API) runs this same turn. It keeps no
transaction open while the model thinks; the caller stores the result.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import LLM, Usage
from parley.errors import LLMError
from parley.store.queries.turns import set_remote_conversation

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    model: str
    instructions: str
    context: str = "conversation"
    prompt_id: str | None = None
    prompt_version: str | None = None
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


@dataclass(frozen=True, slots=True)
class TurnResult:
    text: str
    response_id: str
    model: str
    usage: Usage
    latency_ms: int
    prompt: str | None


class Agent:
    def __init__(
        self, llm: LLM, config: AgentConfig, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._llm = llm
        self._config = config
        self._sessions = sessions

    async def run_turn(self, request: TurnRequest) -> TurnResult:
        params = self._params(request)
        if self._config.context == "conversation":
            remote = request.remote_conversation_id or await self._new_remote(request)
            try:
                return await self._respond({**params, "conversation": remote})
            except LLMError as exc:
                if exc.status != 404:
                    raise
                # The upstream lost or expired the conversation: start a new one and retry once.
                log.warning("agent.remote_conversation_lost", remote_conversation_id=remote)
                remote = await self._new_remote(request)
                return await self._respond({**params, "conversation": remote})
        if self._config.context == "previous_response" and request.previous_response_id:
            params["previous_response_id"] = request.previous_response_id
        return await self._respond(params)

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        items: list[dict[str, Any]] = [{"role": "user", "content": text} for text in request.inputs]
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
        if self._config.prompt_id:
            prompt: dict[str, Any] = {"id": self._config.prompt_id}
            if self._config.prompt_version:
                prompt["version"] = self._config.prompt_version
            params["prompt"] = prompt
        else:
            params["model"] = self._config.model
            params["instructions"] = self._config.instructions
        return params

    def safety_identifier(self, customer_key: str) -> str:
        digest = hmac.new(self._config.identity_key, customer_key.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    async def _new_remote(self, request: TurnRequest) -> str:
        remote = await self._llm.create_conversation(
            metadata={"parley_conversation_id": str(request.conversation_id)}
        )
        # Stored at once: a turn that fails later must not leave a second remote conversation.
        async with self._sessions() as session:
            await set_remote_conversation(
                session, conversation_id=request.conversation_id, remote_id=remote
            )
            await session.commit()
        return remote

    async def _respond(self, params: dict[str, Any]) -> TurnResult:
        response = await self._llm.respond(**params)
        prompt = params.get("prompt")
        return TurnResult(
            text=response.text,
            response_id=response.response_id,
            model=response.model,
            usage=response.usage,
            latency_ms=response.latency_ms,
            prompt=prompt["id"] if prompt else None,
        )
