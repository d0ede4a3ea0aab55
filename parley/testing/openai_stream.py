"""Server-sent events for `stream: true`, in the order OpenAI sends them.

The SDK's `responses.stream()` rebuilds the final Response from these events and asserts on
their order and indices, so every event carries `type`, a `sequence_number` counting from 0,
and the `item_id` / `output_index` / `content_index` it belongs to.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

Event = dict[str, Any]

_DELTA_TYPES = {"response.output_text.delta", "response.function_call_arguments.delta"}


def split_deltas(text: str) -> list[str]:
    """Word by word, keeping the whitespace, so the deltas join back to the exact text."""
    return re.findall(r"\s+|\S+\s*", text)


def response_events(response: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    start = {**copy.deepcopy(response), "status": "in_progress", "output": [], "usage": None}
    start["completed_at"] = None
    events.append({"type": "response.created", "response": start})
    events.append({"type": "response.in_progress", "response": copy.deepcopy(start)})
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            events.extend(_message_events(index, item))
        elif item["type"] == "function_call":
            events.extend(_function_call_events(index, item))
        else:
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": item}
            )
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
    final_type = {
        "incomplete": "response.incomplete",
        "failed": "response.failed",
    }.get(response.get("status", "completed"), "response.completed")
    events.append({"type": final_type, "response": response})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _message_events(index: int, item: dict[str, Any]) -> Iterator[Event]:
    ids = {"item_id": item["id"], "output_index": index}
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": {**item, "status": "in_progress", "content": []},
    }
    for content_index, part in enumerate(item["content"]):
        at = {**ids, "content_index": content_index}
        text = part.get("text", "")
        empty = {**part, "text": ""}
        yield {"type": "response.content_part.added", **at, "part": empty}
        for delta in split_deltas(text):
            yield {"type": "response.output_text.delta", **at, "delta": delta, "logprobs": []}
        yield {"type": "response.output_text.done", **at, "text": text, "logprobs": []}
        yield {"type": "response.content_part.done", **at, "part": part}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _function_call_events(index: int, item: dict[str, Any]) -> Iterator[Event]:
    ids = {"item_id": item["id"], "output_index": index}
    arguments = item["arguments"]
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": {**item, "arguments": "", "status": "in_progress"},
    }
    # Arguments arrive in small slices, as a model writes them.
    for start in range(0, len(arguments), 8):
        delta = arguments[start : start + 8]
        yield {"type": "response.function_call_arguments.delta", **ids, "delta": delta}
    yield {
        "type": "response.function_call_arguments.done",
        **ids,
        "name": item["name"],
        "arguments": arguments,
    }
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def sse(event: Event) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def sse_stream(events: list[Event], delay: float = 0.0) -> AsyncIterator[bytes]:
    for event in events:
        if delay > 0 and event["type"] in _DELTA_TYPES:
            await asyncio.sleep(delay)
        yield sse(event)
