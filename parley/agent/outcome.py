"""A turn's outcome, the same for every door (a channel's worker, the Responses API).

Before the model: the caller's text is gated (cut to length, card numbers masked, optional
moderation, the per-customer rate). After it: the rows the turn leaves (its tool calls, then
the answer, carrying its usage, cost and the prompt that produced it), which each door stores
with `store.queries.turns.record_turn` in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from parley.agent.llm import ToolCall
from parley.agent.pricing import Price, priced_usage
from parley.agent.prompts import PromptChoice
from parley.agent.safety import Limits, prepare_input
from parley.agent.turn import Agent, TurnResult
from parley.errors import LLMError
from parley.observability.metrics import count_usage
from parley.store.queries.turns import Reply
from parley.store.queries.usage import UsageAdd

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InputGate:
    """What of a caller's input may reach the model, and whether any of it may."""

    limits: Limits
    agent: Agent

    def prepare(self, texts: Iterable[str]) -> list[str]:
        """The texts as the model gets them; the stored messages keep the originals."""
        limits = self.limits
        return [
            prepare_input(text, max_chars=limits.max_input_chars, redact=limits.redact_cards)
            for text in texts
        ]

    async def refuses(self, texts: list[str]) -> bool:
        """With moderation on, whether the upstream flags the text. A moderation endpoint that
        fails lets the turn go on: it is a filter, not a gate."""
        if not self.limits.moderation or not texts:
            return False
        try:
            flagged = await self.agent.flagged(texts)
        except LLMError as exc:
            log.warning("turn.moderation_unavailable", reason=str(exc))
            return False
        if flagged:
            log.warning("turn.refused", messages=len(texts))
        return flagged

    def allowed(self, *, earlier: int) -> int:
        """How many more messages this customer may have answered in the current minute."""
        return max(self.limits.messages_per_minute - earlier, 0)


def priced(result: TurnResult, prices: dict[str, Price]) -> UsageAdd:
    """The turn's usage with its cost. Every door prices a turn once, right after the model
    answered, so this is also where its tokens and cost are counted (`/metrics`): they were
    spent whatever happens to the answer next."""
    usage = priced_usage(result.model, result.usage, prices)
    count_usage(
        result.model or "unknown",
        tokens={
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cached": usage.cached_tokens,
            "reasoning": usage.reasoning_tokens,
        },
        cost_usd=float(usage.cost_usd) if usage.cost_usd is not None else None,
    )
    return usage


def tool_rows(result: TurnResult) -> list[Reply]:
    """The turn's function calls as stored, never sent: Parley's own with their outputs, then
    the caller's (Responses API) whose outputs the caller sends in its next request."""
    rows = [tool_row(event.call, event.output) for event in result.tool_events]
    return rows + [tool_row(call, None) for call in result.caller_calls]


def tool_row(call: ToolCall, output: str | None) -> Reply:
    text = f"{call.name}({call.arguments})" + (f" -> {output}" if output is not None else "")
    return Reply(
        text=text,
        sender="tool",
        kind="tool_call",
        deliver=False,
        meta={
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
            "output": output,
        },
    )


def answer_rows(
    result: TurnResult,
    parts: list[str],
    *,
    usage: UsageAdd,
    prompt: PromptChoice | None,
    meta: dict[str, Any] | None = None,
    numbered: bool = False,
    deliver: bool = True,
    status: str | None = None,
) -> list[Reply]:
    """The answer as one row per part; the first part carries the turn's usage and cost.

    Args:
        parts: the answer as the door sends it (a channel splits it within its limit).
        meta: fields every part's metadata gets (the Responses API's response id).
        numbered: record each part's place (`part`, `parts`) in its metadata.
        deliver: queue the parts for a channel's delivery (False: the door answers itself).
        status: the parts' status when they are not delivered.
    """
    attribution, version_id = prompt_attribution(result, prompt)
    rows = []
    for index, part in enumerate(parts):
        first = index == 0
        part_meta: dict[str, Any] = dict(meta or {})
        if numbered:
            part_meta.update(part=index + 1, parts=len(parts))
        if attribution is not None:
            part_meta["prompt"] = attribution
        rows.append(
            Reply(
                text=part,
                response_id=result.response_id,
                model=result.model,
                input_tokens=result.usage.input_tokens if first else None,
                cached_tokens=result.usage.cached_tokens if first else None,
                output_tokens=result.usage.output_tokens if first else None,
                reasoning_tokens=result.usage.reasoning_tokens if first else None,
                cost_usd=usage.cost_usd if first else None,
                latency_ms=result.latency_ms if first else None,
                prompt_version_id=version_id,
                meta=part_meta,
                deliver=deliver,
                direction=None if deliver else "out",
                status=status,
            )
        )
    return rows


def prompt_attribution(
    result: TurnResult, prompt: PromptChoice | None
) -> tuple[dict[str, Any] | None, int | None]:
    """Which prompt produced the answer, for its metadata and `prompt_version_id`: the
    dashboard prompt (OPENAI_PROMPT_ID) when that answered, else Parley's own version (none
    for the built-in prompt)."""
    if result.prompt:
        return {"id": result.prompt}, None
    if prompt is not None and prompt.name:
        return prompt.label, prompt.version_id
    return None, None
