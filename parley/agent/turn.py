"""One agent turn: the customer's new messages in, one answer out.

Every door (the channels' worker, the Responses API) runs this same turn. It keeps no
transaction open while the model thinks; the caller stores the result.

The turn's parts: its request parameters and prompt (`turn_params`), how the model remembers
(`strategies`, by `AgentConfig.context`), and the function-calling loop (`tool_loop`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import LLM
from parley.agent.prompts import PromptChoice, PromptDefaults, choose_prompt
from parley.agent.strategies import Strategies
from parley.agent.tool_loop import ToolLoop
from parley.agent.tools import ToolRegistry
from parley.agent.turn_params import TurnParams
from parley.agent.turn_types import AgentConfig, TurnRequest, TurnResult
from parley.store.models import Account, Contact, Conversation
from parley.store.queries.prompt_cache import PromptCache

__all__ = ["Agent", "AgentConfig", "TurnRequest", "TurnResult"]


class Agent:
    def __init__(
        self,
        llm: LLM,
        config: AgentConfig,
        sessions: async_sessionmaker[AsyncSession],
        tools: ToolRegistry | None = None,
    ) -> None:
        self._llm = llm
        self._config = config
        self._sessions = sessions
        tools = tools or ToolRegistry()
        self._params = TurnParams(llm, config, tools)
        loop = ToolLoop(llm, config, tools, self._params)
        self._strategies = Strategies(llm, config, sessions, loop)
        # Bindings kept a second (dropped at once on a change this process commits), as the
        # Responses API keeps them: each turn otherwise reads them twice.
        self._prompts = PromptCache()

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
                cache=self._prompts,
            )
            if session.in_transaction():  # it read or recorded something (not from the cache)
                await session.commit()
        return prompt

    async def run_turn(self, request: TurnRequest) -> TurnResult:
        params = self._params.build(request)
        strategy = request.strategy or self._config.context
        if strategy == "local":
            return await self._strategies.local_turn(request, params)
        if strategy == "previous_response":
            return await self._strategies.chained_turn(request, params)
        return await self._strategies.conversation_turn(request, params)

    async def transcribe(
        self, *, audio: bytes, filename: str, content_type: str, model: str
    ) -> str:
        """What a customer said in a voice note or audio file (`LLMError` if it failed)."""
        return await self._llm.transcribe(
            audio=audio, filename=filename, content_type=content_type, model=model
        )

    async def flagged(self, texts: list[str]) -> bool:
        return await self._llm.flagged(texts)

    def safety_identifier(self, customer_key: str) -> str:
        return self._params.safety_identifier(customer_key)
