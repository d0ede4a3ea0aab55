"""What a turn is configured with, asked for and answers: the agent's parts (`turn_params`,
`strategies`, `tool_loop`) share these without importing the `Agent` that joins them.
`parley.agent.turn` re-exports them, the names its callers use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parley.agent.llm import OnDelta, ToolCall, Usage
from parley.agent.prompts import PromptChoice
from parley.agent.tools import ToolEvent


@dataclass(frozen=True, slots=True)
class AgentConfig:
    model: str
    instructions: str
    context: str = "conversation"
    context_tokens: int = 8000
    """Tokens of history `local` sends, and a seed for a replaced remote state may carry."""
    max_input_tokens: int = 0
    """Past this many input tokens in a turn, the next one prunes the upstream context
    (`agent.pruning`); 0: never."""
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
    last_input_tokens: int | None = None
    """The last turn's input tokens on the upstream state this turn continues; set by a door
    that keeps that state per conversation (the channels' worker), so it may be pruned."""
    user_id: int | None = None
    """The Responses API caller, when the turn comes through `/v1`."""
    items: list[dict[str, Any]] | None = None
    """The new input as Responses API items (parts, images, function outputs), instead of
    `inputs`: the Responses API's caller's, or a channel's messages that carry images."""
    # What only the Responses API sets:
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
    fresh: bool = False
    """The conversation was created for this turn and has no history to read yet."""
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
    context_tokens: int = 0
    """Input tokens of the turn's last model call: how large the upstream context has grown
    (`usage` sums every call of a tool loop, so it overstates it)."""
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
