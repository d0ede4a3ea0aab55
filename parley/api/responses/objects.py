"""The Responses API's objects on the wire, as the official SDK parses them: the Response,
lists, and the server-sent events of a streamed answer, in OpenAI's order."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.responses import JSONResponse

from parley.responses.items import message_item
from parley.responses.request import new_id
from parley.store.models import AnyResponse

FINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


class FastJSON(JSONResponse):
    """A JSON body encoded by orjson: the same compact JSON as Starlette's, several times
    faster on a whole Response object."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def response_object(record: AnyResponse) -> dict[str, Any]:
    request = record.request or {}
    completed_at = record.completed_at if record.status == "completed" else None
    return {
        "id": record.id,
        "object": "response",
        "created_at": int(record.created_at.timestamp()),
        "status": record.status,
        "background": record.background,
        "completed_at": int(completed_at.timestamp()) if completed_at else None,
        "error": record.error,
        "incomplete_details": record.incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": record.profile,
        "output": record.output or [],
        "parallel_tool_calls": True,
        "previous_response_id": record.previous_response_id,
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "metadata": record.meta or {},
        "usage": record.usage,
        "store": request.get("store", True),
        "text": request.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "user": None,
    }


def list_object(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": has_more,
    }


_CLOSE = object()


class EventStream:
    """The events of one streamed response, numbered from 0, queued for the HTTP stream.

    The queue is unbounded on purpose: an answer's events are few and small, and a slow
    reader must get every delta, so nothing is ever dropped; the turn never waits for the
    reader either, so a client that goes away costs the turn nothing."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | object] = asyncio.Queue()
        self._number = 0
        self._message_id: str | None = None
        self._text: list[str] = []

    @property
    def streamed_text(self) -> str:
        return "".join(self._text)

    def emit(self, event: dict[str, Any]) -> None:
        """Queue `event` as its SSE frame, serialised now: what it holds may change after
        (the response object as the turn goes on), and no copy of it is needed."""
        event["sequence_number"] = self._number
        self._number += 1
        self._queue.put_nowait(
            b"event: %s\ndata: %s\n\n" % (event["type"].encode(), orjson.dumps(event))
        )

    def started(self, record: AnyResponse) -> None:
        self._started(response_object(record))

    def _started(self, response: dict[str, Any]) -> None:
        snapshot = {**response, "status": "in_progress", "output": [], "usage": None}
        self.emit({"type": "response.created", "response": snapshot})
        self.emit({"type": "response.in_progress", "response": snapshot})

    async def delta(self, text: str) -> None:
        self._add_text(text)

    def _add_text(self, text: str, item_id: str | None = None) -> None:
        """One piece of the answer's text (the message is opened on the first)."""
        if self._message_id is None:
            self._open_message(item_id)
        self._text.append(text)
        self.emit(
            {
                "type": "response.output_text.delta",
                "item_id": self._message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }
        )

    def _open_message(self, item_id: str | None = None) -> None:
        self._message_id = item_id or new_id("msg")
        item = message_item("", item_id=self._message_id, status="in_progress")
        item["content"] = []
        self.emit({"type": "response.output_item.added", "output_index": 0, "item": item})
        self.emit(
            {
                "type": "response.content_part.added",
                "item_id": self._message_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            }
        )

    @property
    def message_id(self) -> str | None:
        return self._message_id

    def finished(self, record: AnyResponse) -> None:
        self._finished(response_object(record))

    def _finished(self, response: dict[str, Any]) -> None:
        """The rest of the output (closing the streamed message; function calls, whose
        arguments come whole), then the final event, and the end of the stream."""
        for index, item in enumerate(response["output"]):
            if item["type"] == "message":
                if self._message_id is None:  # not streamed: its text comes in one piece
                    text = item["content"][0]["text"]
                    if text:
                        self._add_text(text, item["id"])
                    else:
                        self._open_message(item["id"])
                self._close_message(index, item)
            elif item["type"] == "function_call":
                self._function_call(index, item)
        self.emit(
            {
                "type": FINAL_EVENTS.get(response["status"], "response.completed"),
                "response": response,
            }
        )
        self._queue.put_nowait(_CLOSE)

    def _close_message(self, index: int, item: dict[str, Any]) -> None:
        part = item["content"][0]
        at = {"item_id": item["id"], "output_index": index, "content_index": 0}
        self.emit({"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []})
        self.emit({"type": "response.content_part.done", **at, "part": part})
        self.emit({"type": "response.output_item.done", "output_index": index, "item": item})

    def _function_call(self, index: int, item: dict[str, Any]) -> None:
        at = {"item_id": item["id"], "output_index": index}
        added = {**item, "arguments": "", "status": "in_progress"}
        self.emit({"type": "response.output_item.added", "output_index": index, "item": added})
        self.emit(
            {"type": "response.function_call_arguments.delta", **at, "delta": item["arguments"]}
        )
        self.emit(
            {
                "type": "response.function_call_arguments.done",
                **at,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
        self.emit({"type": "response.output_item.done", "output_index": index, "item": item})

    async def frames(self, keepalive: float) -> Any:
        """The stream's bytes: each event as `event:`/`data:`, a comment on long silences.
        Events already queued go out together in one write; none waits for a later one."""
        while True:
            if self._queue.empty():
                try:
                    first = await asyncio.wait_for(self._queue.get(), keepalive)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
            else:  # no timer when there is something to send already
                first = self._queue.get_nowait()
            events = [first]
            while not self._queue.empty() and events[-1] is not _CLOSE:
                events.append(self._queue.get_nowait())
            closed = events[-1] is _CLOSE
            frames = [event for event in events if isinstance(event, bytes)]
            if frames:
                yield b"".join(frames)
            if closed:
                return


def replay(record: AnyResponse) -> EventStream:
    """The events of a response already finished (an idempotent retry of a streamed POST)."""
    stream = EventStream()
    stream.started(record)
    stream.finished(record)
    return stream
