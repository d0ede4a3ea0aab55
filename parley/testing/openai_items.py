"""Items as the OpenAI Responses and Conversations APIs store and return them.

Requests may use the short forms (`input` as a string, `{"role": "user", "content": "hi"}`);
the API stores the long form with ids and statuses, and the SDK's models for listed items
require those fields, so everything is normalized on the way in.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import secrets
from typing import Any

Item = dict[str, Any]

_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    # A counter keeps ids unique and ordered; the random tail makes them look like OpenAI's.
    return f"{prefix}_{next(_counter):08x}{secrets.token_hex(12)}"


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters per token."""
    return math.ceil(len(text) / 4) if text else 0


class InvalidInput(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def normalize_input(value: Any) -> list[Item]:
    if value is None:
        return []
    if isinstance(value, str):
        return [user_message(value)]
    if not isinstance(value, list):
        raise InvalidInput("Invalid type for 'input': expected a string or an array.", "input")
    return [normalize_item(item, f"input[{i}]") for i, item in enumerate(value)]


def user_message(text: str) -> Item:
    return normalize_item({"role": "user", "content": text}, "input")


def normalize_item(item: Any, param: str) -> Item:
    if not isinstance(item, dict):
        raise InvalidInput(f"Invalid type for '{param}': expected an object.", param)
    kind = item.get("type", "message")
    if kind == "message":
        return _normalize_message(item, param)
    if kind == "function_call_output":
        if not item.get("call_id"):
            raise InvalidInput(f"Missing required parameter: '{param}.call_id'.", param)
        return {
            "id": item.get("id") or new_id("fco"),
            "type": "function_call_output",
            "call_id": item["call_id"],
            "output": item.get("output", ""),
            "status": item.get("status") or "completed",
        }
    if kind == "function_call":
        return {
            **item,
            "id": item.get("id") or new_id("fc"),
            "status": item.get("status") or "completed",
        }
    # Other item kinds (reasoning, item_reference …) are kept as sent.
    return {**item, "id": item.get("id") or new_id("item")}


def _normalize_message(item: Item, param: str) -> Item:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidInput(f"Invalid value for '{param}.role': {role!r}.", param)
    content = item.get("content")
    if isinstance(content, str):
        content = [
            {"type": "output_text" if role == "assistant" else "input_text", "text": content}
        ]
    if not isinstance(content, list):
        raise InvalidInput(f"Missing required parameter: '{param}.content'.", param)
    return {
        "id": item.get("id") or new_id("msg"),
        "type": "message",
        "role": role,
        "status": item.get("status") or "completed",
        "content": [
            _normalize_part(part, role, f"{param}.content[{i}]") for i, part in enumerate(content)
        ],
    }


_DATA_URL = re.compile(r"data:image/(jpeg|png|gif|webp);base64,([A-Za-z0-9+/=]+)", re.ASCII)


def _normalize_part(part: Any, role: str, param: str) -> Any:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "input_image":
        _check_image(part.get("image_url"), param)
        return {"detail": "auto", **part}
    if kind == "output_text" or (role == "assistant" and kind == "text"):
        return {"annotations": [], **part, "type": "output_text"}
    return part


def _check_image(url: Any, param: str) -> None:
    """An inline image must be a base64 data URL of a type the model reads, as OpenAI
    checks; an http(s) URL is taken as it is (OpenAI would fetch it)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return
    match = _DATA_URL.fullmatch(url)
    try:
        valid = match is not None and bool(base64.b64decode(match.group(2), validate=True))
    except ValueError:
        valid = False
    if not valid:
        raise InvalidInput(
            "Invalid image_url: expected a base64-encoded data URL of an image "
            "(image/jpeg, image/png, image/gif or image/webp).",
            f"{param}.image_url",
        )


def message_texts(items: list[Item], role: str | None = None) -> list[str]:
    """The text of each message item (of `role`, if given), parts joined by newlines."""
    texts = []
    for item in items:
        if item.get("type") != "message" or (role is not None and item.get("role") != role):
            continue
        parts = [p.get("text", "") for p in item.get("content", []) if isinstance(p, dict)]
        texts.append("\n".join(t for t in parts if isinstance(t, str) and t))
    return texts


def item_tokens(item: Item) -> int:
    if item.get("type") == "message":
        return 4 + sum(estimate_tokens(text) for text in message_texts([item]))
    if item.get("type") == "function_call":
        return (
            4
            + estimate_tokens(str(item.get("name", "")))
            + estimate_tokens(str(item.get("arguments", "")))
        )
    if item.get("type") == "function_call_output":
        output = item.get("output", "")
        return 4 + estimate_tokens(output if isinstance(output, str) else json.dumps(output))
    return 4


def assistant_message(text: str, *, status: str = "completed") -> Item:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call(name: str, arguments: Any) -> Item:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "call_id": new_id("call"),
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def list_page(items: list[Item], query: dict[str, str], *, default_order: str) -> dict[str, Any]:
    """A cursor page like OpenAI's list endpoints: `limit`, `order`, `after`."""
    order = query.get("order", default_order)
    ordered = list(reversed(items)) if order == "desc" else list(items)
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(100, int(query.get("limit", "20"))))
    except ValueError:
        limit = 20
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
