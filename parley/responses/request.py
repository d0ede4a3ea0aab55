"""A `POST /v1/responses` request once the HTTP edge has checked it: plain data for the turn.

The edge (`parley.api.responses`) validates the wire body and builds a `CreateRequest`; nothing
here knows about HTTP, so the turn logic can be run and tested without it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class CreateRequest:
    model: str
    input: list[dict[str, Any]]
    """Normalised items, each with an `id`."""
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    top_p: float | None = None
    text: dict[str, Any] | None = None
    """OpenAI's `text` setting (the output's format, e.g. a JSON schema), passed upstream."""
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    store: bool = True
    background: bool = False
    stream: bool = False
    previous_response_id: str | None = None
    x_context: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        """What is stored with the response (and read back for GET and input_items)."""
        return {
            "input": self.input,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
            "top_p": self.top_p,
            "text": self.text,
            "reasoning": self.reasoning,
            "store": self.store,
            "stream": self.stream,
            "x_context": self.x_context,
        }


def context_lines(x_context: dict[str, Any]) -> list[str]:
    """One line per top-level key: `[Context: key — field: value, …]`."""
    lines = []
    for key, value in x_context.items():
        if isinstance(value, dict):
            detail = ", ".join(f"{name}: {_scalar(item)}" for name, item in value.items())
        elif isinstance(value, list):
            detail = ", ".join(_scalar(item) for item in value)
        else:
            detail = _scalar(value)
        lines.append(f"[Context: {key} — {detail}]")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ": "))
