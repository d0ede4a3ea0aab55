"""The simulated model's turn, request validation and the Response object, as OpenAI
builds them."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from parley.testing.faults import ApiError, Recorded
from parley.testing.openai_items import (
    InvalidInput,
    Item,
    estimate_tokens,
    item_tokens,
    list_page,
    message_texts,
    new_id,
    normalize_item,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
ERROR_MESSAGES = {
    401: "Incorrect API key provided.",
    403: "You are not allowed to sample from this model.",
    404: "Not found.",
    408: "Request timed out.",
    409: "The request conflicted with another request.",
    429: "Rate limit reached for requests. Please try again in 1s.",
    503: "The engine is currently overloaded, please try again later.",
}
ERROR_CODES: dict[int, str] = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


@dataclass
class SimTurn:
    """What the simulated model sees for one `POST /v1/responses`."""

    body: dict[str, Any]
    user_texts: list[str]  # this request's user messages, in order
    input_items: list[Item]  # this request's input, normalized
    history: list[Item]  # items of the conversation / previous_response chain it continues
    conversation_id: str | None = None
    previous_response_id: str | None = None

    @property
    def history_texts(self) -> list[str]:
        """Texts of earlier user and assistant messages, oldest first."""
        return message_texts(self.history)

    @property
    def tool_outputs(self) -> list[str]:
        outputs = [i["output"] for i in self.input_items if i["type"] == "function_call_output"]
        return [o if isinstance(o, str) else json.dumps(o) for o in outputs]

    @property
    def instructions(self) -> str | None:
        value = self.body.get("instructions")
        return value if isinstance(value, str) else None


Reply = Callable[[SimTurn], str | Awaitable[str]]
ToolCalls = Callable[[SimTurn], list[dict[str, Any]] | None]


def echo_reply(turn: SimTurn) -> str:
    if turn.tool_outputs:
        return f"Tool said: {turn.tool_outputs[-1]}"
    return f"Echo: {turn.user_texts[-1] if turn.user_texts else ''}"


def openai_error(
    status: int, *, code: int | str | None, message: str | None, **fields: Any
) -> dict[str, Any]:
    default_message = "The server had an error while processing your request. Sorry about that!"
    return {
        "error": {
            "message": message or ERROR_MESSAGES.get(status, default_message),
            "type": fields.get("type") or ERROR_TYPES.get(status, "server_error"),
            "param": fields.get("param"),
            "code": code if code is not None else ERROR_CODES.get(status),
        }
    }


def json_object(record: Recorded, *, allow_empty: bool = False) -> dict[str, Any]:
    if record.json is None and allow_empty and not record.body.strip():
        return {}
    if not isinstance(record.json, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The OpenAI API expects a "
            "JSON payload.",
        )
    return record.json


def validate_request(body: dict[str, Any]) -> None:
    if not body.get("model") and not body.get("prompt"):
        raise ApiError(
            400,
            "Missing required parameter: 'model'.",
            code="missing_required_parameter",
            param="model",
        )
    validate_metadata(body.get("metadata"))
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 16):
        raise ApiError(
            400,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {limit} instead.",
            code="integer_below_min_value",
            param="max_output_tokens",
        )


def validate_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    valid = (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(k, str) and len(k) <= 64 for k in metadata)
        and all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    )
    if not valid:
        raise ApiError(
            400,
            "Invalid 'metadata': at most 16 pairs, keys up to 64 and string values up to 512 "
            "characters.",
            code="invalid_value",
            param="metadata",
        )
    return dict(metadata)


def normalize_items(raw_items: list[Any], param: str) -> list[Item]:
    try:
        return [normalize_item(item, f"{param}[{i}]") for i, item in enumerate(raw_items)]
    except InvalidInput as exc:
        raise ApiError(400, str(exc), param=exc.param) from None


def check_tool_outputs(history: list[Item], input_items: list[Item]) -> None:
    """OpenAI refuses outputs for unknown calls and continuations that leave a call open."""
    calls = [i["call_id"] for i in history + input_items if i["type"] == "function_call"]
    answered = {i["call_id"] for i in history + input_items if i["type"] == "function_call_output"}
    for call_id in answered - set(calls):
        raise ApiError(
            400,
            f"No tool call found for function call output with call_id {call_id}.",
            param="input",
        )
    for call_id in calls:
        if call_id not in answered:
            raise ApiError(400, f"No tool output found for function call {call_id}.", param="input")


def conversation_id(reference: Any) -> str:
    if isinstance(reference, dict):
        return str(reference.get("id", ""))
    return str(reference)


def instruction_tokens(body: dict[str, Any]) -> int:
    instructions = body.get("instructions")
    tokens = estimate_tokens(instructions) if isinstance(instructions, str) else 0
    if body.get("tools"):
        tokens += estimate_tokens(json.dumps(body["tools"]))
    return tokens


def _usage(body: dict[str, Any], turn: SimTurn, output: list[Item]) -> dict[str, Any]:
    cached = sum(item_tokens(i) for i in turn.history)
    input_tokens = max(
        1, instruction_tokens(body) + cached + sum(item_tokens(i) for i in turn.input_items)
    )
    output_tokens = max(1, sum(item_tokens(i) for i in output) - 4 * len(output))
    return {
        "input_tokens": input_tokens,
        # Continuing a chain re-reads its history, which real prompt caching serves from cache.
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _truncate(body: dict[str, Any], output: list[Item], text: str) -> dict[str, Any] | None:
    """Cut a message answer to `max_output_tokens`, as the API does, marking it incomplete."""
    limit = body.get("max_output_tokens")
    if limit is None or not text or estimate_tokens(text) <= limit:
        return None
    part = output[0]["content"][0]
    part["text"] = text[: limit * 4]
    output[0]["status"] = "incomplete"
    return {"reason": "max_output_tokens"}


_EMPTY: dict[str, Any] = {"number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}


def formatted(body: dict[str, Any], text: str) -> str:
    """The reply in the format `text.format` asks for: as it is, or a JSON object. For a
    `json_schema`, each top-level property is filled (strings with the reply, others empty),
    so a test can see the schema was read; a `json_object` is `{"text": reply}`."""
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        return json.dumps({"text": text})
    if fmt.get("type") != "json_schema":
        return text
    properties = (fmt.get("schema") or {}).get("properties") or {}
    return json.dumps(
        {
            name: text if spec.get("type") == "string" else _EMPTY.get(spec.get("type"))
            for name, spec in properties.items()
        }
    )


def response_body(
    body: dict[str, Any],
    turn: SimTurn,
    output: list[Item],
    text: str,
    conversation_id: str | None,
) -> dict[str, Any]:
    now = int(time.time())
    incomplete = _truncate(body, output, text)
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": now,
        "status": "incomplete" if incomplete else "completed",
        "background": bool(body.get("background", False)),
        "completed_at": now,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model") or "gpt-5-mini",
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "conversation": {"id": conversation_id} if conversation_id else None,
        "prompt": body.get("prompt"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(body, turn, output),
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def list_default_desc(items: list[Item], query: dict[str, str]) -> dict[str, Any]:
    # Both list endpoints default to newest first, like OpenAI's.
    return list_page(items, query, default_order="desc")
