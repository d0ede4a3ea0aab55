"""A turn's model calls: the first one, then the function-calling loop. Parley's own tools run
here; calls of the caller's tools (Responses API) end the turn and go back to the caller."""

from __future__ import annotations

from typing import Any

from parley.agent.llm import LLM, LLMResponse, ToolCall, Usage
from parley.agent.tools import ToolContext, ToolEvent, ToolRegistry
from parley.agent.turn_params import TurnParams
from parley.agent.turn_types import AgentConfig, TurnRequest, TurnResult


class ToolLoop:
    def __init__(
        self, llm: LLM, config: AgentConfig, tools: ToolRegistry, turn_params: TurnParams
    ) -> None:
        self._llm = llm
        self._config = config
        self._tools = tools
        self._turn_params = turn_params

    async def respond(self, request: TurnRequest, params: dict[str, Any]) -> TurnResult:
        """One model call, then the function-calling loop: run the tools the model asked for,
        send their outputs back, until it answers in text or the step limit is reached."""
        response, params = await self._turn_params.first_call(request, params)
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
            context_tokens=response.usage.input_tokens,
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
