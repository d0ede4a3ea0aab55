"""`POST /v1/moderations`, minimal: an input is flagged (as harassment) exactly when it
contains the simulator's marker, so tests choose what gets flagged."""

from __future__ import annotations

from typing import Any

from parley.testing.faults import ApiError
from parley.testing.openai_items import new_id

CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]
FLAGGED_CATEGORY = "harassment"


def moderation_answer(body: dict[str, Any], marker: str) -> dict[str, Any]:
    texts = _texts(body.get("input"))
    return {
        "id": new_id("modr"),
        "model": body.get("model") or "omni-moderation-latest",
        "results": [_result(marker in text) for text in texts],
    }


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        # Multi-modal input is one result over all of its parts.
        parts = [p.get("text", "") for p in value if isinstance(p, dict)]
        return ["\n".join(p for p in parts if isinstance(p, str))]
    raise ApiError(400, "Invalid 'input': expected a string or an array.", param="input")


def _result(flagged: bool) -> dict[str, Any]:
    return {
        "flagged": flagged,
        "categories": {c: flagged and c == FLAGGED_CATEGORY for c in CATEGORIES},
        "category_scores": {
            c: 0.97 if flagged and c == FLAGGED_CATEGORY else 0.0001 for c in CATEGORIES
        },
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }
