"""What the OpenAPI document says of `POST /v1/responses`, which FastAPI cannot infer: the
route reads its body by hand (to answer OpenAI's 400s, not FastAPI's 422s), and answers a
stream as server-sent events."""

from __future__ import annotations

from typing import Any

from parley.api.responses.request import DEFAULT_ONLY
from parley.api.responses.schemas import CreateBody


def _inlined(node: Any, definitions: dict[str, Any]) -> Any:
    """`node` with each `#/$defs/…` reference replaced by its definition: pydantic's references
    are local to its schema, and would point nowhere inside the OpenAPI document."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(value, definitions) for value in node]
    return node


def _create_body_schema() -> dict[str, Any]:
    schema = CreateBody.model_json_schema()
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inlined(schema, definitions)
    # As `parse_create` reads it: the SDK's defaults taken, any other field refused.
    for name, allowed in DEFAULT_ONLY.items():
        inlined["properties"][name] = {"enum": list(allowed)}
    inlined["additionalProperties"] = False
    return inlined


EXAMPLE_INPUT = [{"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}]
CREATE_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _create_body_schema(),
                "examples": {
                    "answer": {"value": {"model": "default", "input": EXAMPLE_INPUT}},
                    "streamed": {
                        "value": {"model": "default", "input": EXAMPLE_INPUT, "stream": True}
                    },
                },
            }
        },
    }
}
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The response object; with `stream: true`, its events as server-sent "
        "events instead",
        # No schema for the stream: its body is a sequence of events, not one JSON document.
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}
