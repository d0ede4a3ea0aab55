"""The items of a Responses API turn: what is stored as the response's output (OpenAI's
shapes, read back by the SDK), what goes upstream, and the rows the caller's input becomes."""

from __future__ import annotations

from typing import Any

from parley.agent.llm import ToolCall, Usage
from parley.agent.outcome import InputGate
from parley.agent.tools import ToolEvent
from parley.responses.request import CreateRequest, context_lines, new_id
from parley.store.models import AnyResponse, ResponseRecord
from parley.store.queries.turns import Reply

CALLER_ROLES = frozenset({"user", "system", "developer"})
"""The roles whose text the caller wrote (assistant items are the model's, sent back)."""


def message_item(
    text: str, *, item_id: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
        "status": "completed",
    }


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def upstream_items(
    request: CreateRequest, previous: ResponseRecord | None, gate: InputGate, *, local: bool
) -> list[dict[str, Any]]:
    """The caller's items as the upstream takes them: our ids dropped (the upstream does
    not know them), the x_context lines before the user's text. With `local` context, a
    function output is sent after the call it answers, which only we remember.

    The x_context lines are the caller's text too: cut and masked like the user's."""
    items = [_upstream(item, gate) for item in request.input]
    if request.x_context:
        lines = gate.prepare(["\n".join(context_lines(request.x_context))])[0]
        for item in reversed(items):
            if item.get("type") == "message" and item.get("role") == "user":
                item["content"] = [{"type": "input_text", "text": lines}, *item["content"]]
                break
    held = (previous.request.get("held") or []) if previous is not None else []
    answered = {i["call_id"] for i in items if i.get("type") == "function_call_output"}
    if held and answered:
        items = [h["output"] for h in held] + items
    given = {i["call_id"] for i in items if i.get("type") == "function_call"}
    if local and previous is not None and answered - given:
        calls = [
            {k: v for k, v in item.items() if k not in ("id", "status")}
            for item in previous.output
            if item.get("type") == "function_call" and item.get("call_id") in answered - given
        ]
        items = [h["call"] for h in held] + calls + items
    return items


def _upstream(item: dict[str, Any], gate: InputGate) -> dict[str, Any]:
    """An item as it goes upstream: without our ids, and the caller's text (user, system or
    developer: all of it is the caller's) prepared as a channel customer's is (length limit,
    card numbers masked; the stored item keeps it)."""
    clean = {key: value for key, value in item.items() if key not in ("id", "status")}
    if clean.get("type") == "message" and clean.get("role") in CALLER_ROLES:
        clean["content"] = [
            {**part, "text": gate.prepare([part["text"]])[0]}
            if part.get("type") == "input_text"
            else part
            for part in clean["content"]
        ]
    return clean


def caller_texts(request: CreateRequest) -> list[str]:
    """Every text the caller wrote (instructions, system, developer and user messages): what
    moderation judges."""
    texts = [request.instructions] if request.instructions else []
    return texts + [
        part["text"]
        for item in request.input
        if item.get("type") == "message" and item.get("role") in CALLER_ROLES
        for part in item["content"]
        if part.get("type") == "input_text" and part["text"]
    ]


def held_item(event: ToolEvent) -> dict[str, Any]:
    """One of Parley's own calls made beside the caller's: it goes upstream, with its output,
    in the caller's next request."""
    call = event.call
    return {
        "call": {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        "output": {"type": "function_call_output", "call_id": call.call_id, "output": event.output},
    }


def input_rows(
    record: AnyResponse, request: CreateRequest, status: str, error: str | None = None
) -> list[Reply]:
    """The caller's input items as messages of the thread, stored with the response."""
    rows = []
    for item in request.input:
        meta: dict[str, Any] = {"response_id": record.id, "item_id": item["id"]}
        if item["type"] == "message":
            rows.append(_message_row(item, request, meta, status, error))
        else:
            rows.append(
                Reply(
                    direction="internal",
                    sender="tool",
                    kind=item["type"],
                    text=item.get("output") or item.get("arguments"),
                    status="done",
                    payload=item,
                    meta=meta,
                    deliver=False,
                )
            )
    return rows


def _message_row(
    item: dict[str, Any],
    request: CreateRequest,
    meta: dict[str, Any],
    status: str,
    error: str | None,
) -> Reply:
    texts = [p["text"] for p in item["content"] if "text" in p]
    role = item["role"]
    if role == "user" and request.x_context is not None:
        meta["x_context"] = request.x_context
    return Reply(
        direction="in" if role in ("user", "system", "developer") else "out",
        sender={"user": "customer", "assistant": "agent"}.get(role, "developer"),
        kind="text" if len(texts) == len(item["content"]) else "mixed",
        text="\n".join(texts) or None,
        status=status if role == "user" else "done",
        payload=item,
        meta=meta,
        error=error if role == "user" else None,
        deliver=False,
    )
