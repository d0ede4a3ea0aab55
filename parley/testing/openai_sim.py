"""A faithful stand-in for OpenAI's Responses, Conversations and audio transcription APIs,
served over real HTTP.

Answers are decided by plain Python callables (`reply`, `tool_calls`) so tests can prove what
the upstream was asked and what it remembered; everything else (ids, usage, errors, streaming,
chains and conversations) behaves like the real API as the official SDK sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parley.testing.faults import (
    POLL_INTERVAL,
    ApiError,
    Handler,
    Recorded,
    Simulator,
    bearer_token,
)
from parley.testing.openai_audio import Transcribed, Transcripts
from parley.testing.openai_build import (
    Reply,
    SimTurn,
    ToolCalls,
    echo_reply,
    json_object,
    openai_error,
)
from parley.testing.openai_conversations import ConversationRoutes
from parley.testing.openai_items import Item, new_id
from parley.testing.openai_moderation import moderation_answer
from parley.testing.openai_responses import ResponseRoutes
from parley.testing.openai_state import SimState

__all__ = ["OpenAISimulator", "Reply", "SimTurn", "ToolCalls", "echo_reply"]


class OpenAISimulator(Simulator):
    def __init__(
        self,
        *,
        latency: float = 0.0,
        reply: Reply | None = None,
        tool_calls: ToolCalls | None = None,
        stream_delay: float = 0.0,
        context_window: int | None = None,
        api_keys: Collection[str] | None = None,
        moderation_marker: str = "[flagged]",
    ) -> None:
        """`reply` decides the assistant text (default `echo_reply`). `tool_calls` may return
        `[{"name": …, "arguments": {…}}]` to answer with function calls instead; it is not
        asked when the input carries function outputs, so a round trip ends in a message.
        `context_window` (tokens) enables `context_length_exceeded` / `truncation: "auto"`.
        `api_keys`, when given, are the only keys accepted. `/v1/moderations` flags exactly
        the inputs containing `moderation_marker`."""
        super().__init__(latency=latency)
        self.reply: Reply = reply or echo_reply
        self.tool_calls = tool_calls
        self.stream_delay = stream_delay
        self.context_window = context_window
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.moderation_marker = moderation_marker
        self.prompts: dict[str, list[str]] | None = None
        """Dashboard prompts that exist, each with its versions; None accepts any prompt id."""
        self._state = SimState()
        self.transcripts = Transcripts()
        """What `/v1/audio/transcriptions` hears: `transcripts.register(data, text)`."""
        self.app = Starlette(routes=self._routes())

    # --- public helpers for tests ------------------------------------------------------
    def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation as if it expired upstream."""
        return self._state.forget_conversation(conversation_id)

    def has_conversation(self, conversation_id: str) -> bool:
        with self._state.lock:
            return conversation_id in self._state.conversations

    @property
    def deleted_conversations(self) -> list[str]:
        """Ids of the conversations clients deleted (`DELETE /v1/conversations/{id}`), in
        order; a 404 for one already gone is not counted."""
        return self._state.deleted_ids("conversation")

    @property
    def deleted_responses(self) -> list[str]:
        """Ids of the stored responses clients deleted (`DELETE /v1/responses/{id}`)."""
        return self._state.deleted_ids("response")

    async def wait_for_deletions(
        self, *, conversations: int = 0, responses: int = 0, timeout: float = 5.0
    ) -> None:
        """Wait until at least this many conversations and responses were deleted."""
        deadline = time.monotonic() + timeout
        while (
            len(self.deleted_conversations) < conversations
            or len(self.deleted_responses) < responses
        ):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"expected {conversations} conversations and {responses} responses "
                    f"deleted within {timeout}s, got {self.deleted_conversations} and "
                    f"{self.deleted_responses}"
                )
            await asyncio.sleep(POLL_INTERVAL)

    def conversation_items(self, conversation_id: str) -> list[Item]:
        with self._state.lock:
            return list(self._state.conversations[conversation_id].items)

    def stored_response(self, response_id: str) -> dict[str, Any] | None:
        with self._state.lock:
            stored = self._state.responses.get(response_id)
            return stored.body if stored else None

    @property
    def response_requests(self) -> list[Recorded]:
        return self.requests_to("/v1/responses", method="POST")

    @property
    def images(self) -> list[dict[str, Any]]:
        """Every `input_image` part the Responses API was sent, in order."""
        return [
            part
            for record in self.response_requests
            if isinstance(record.json, dict)
            for part in _parts(record.json.get("input"))
            if part.get("type") == "input_image"
        ]

    @property
    def transcribed(self) -> list[Transcribed]:
        """Every file `/v1/audio/transcriptions` transcribed, in order."""
        return self.transcripts.heard

    def reset_state(self) -> None:
        with self._state.lock:
            self._state.reset()
            self.prompts = None
        self.transcripts.reset()

    # --- API shape ---------------------------------------------------------------------
    def error_body(
        self, status: int, *, code: int | str | None, message: str | None, **fields: Any
    ) -> dict[str, Any]:
        return openai_error(status, code=code, message=message, **fields)

    def extra_headers(self) -> dict[str, str]:
        used = len(self._records)
        return {
            "x-request-id": new_id("req"),
            "openai-processing-ms": str(int(self.latency * 1000) + 3),
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-requests": str(max(0, 9999 - used % 10000)),
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "2ms",
        }

    def _routes(self) -> list[Route]:
        def route(path: str, handler: Handler, *methods: str) -> Route:
            return Route(path, self.endpoint(self._authorized(handler)), methods=list(methods))

        responses = ResponseRoutes(self, self._state)
        conversations = ConversationRoutes(self._state)
        return [
            route("/v1/responses", responses.create, "POST"),
            route("/v1/responses/{id}", responses.get, "GET"),
            route("/v1/responses/{id}", responses.delete, "DELETE"),
            route("/v1/responses/{id}/input_items", responses.input_items, "GET"),
            route("/v1/conversations", conversations.create, "POST"),
            route("/v1/conversations/{id}", conversations.get, "GET"),
            route("/v1/conversations/{id}", conversations.update, "POST"),
            route("/v1/conversations/{id}", conversations.delete, "DELETE"),
            route("/v1/conversations/{id}/items", conversations.list_items, "GET"),
            route("/v1/conversations/{id}/items", conversations.add_items, "POST"),
            route("/v1/conversations/{id}/items/{item_id}", conversations.get_item, "GET"),
            route("/v1/moderations", self._moderate, "POST"),
            route("/v1/audio/transcriptions", self.transcripts.create, "POST"),
            route("/{path:path}", self._unknown, "GET", "POST", "PUT", "PATCH", "DELETE"),
        ]

    def _authorized(self, handler: Handler) -> Handler:
        async def check(request: Request, record: Recorded) -> Response:
            token = bearer_token(request)
            if token is None:
                raise ApiError(
                    401,
                    "You didn't provide an API key. Provide it in an Authorization header "
                    "(Authorization: Bearer YOUR_KEY).",
                    code="invalid_api_key",
                )
            if self.api_keys is not None and token not in self.api_keys:
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
            return await handler(request, record)

        return check

    async def _moderate(self, request: Request, record: Recorded) -> Response:
        return JSONResponse(moderation_answer(json_object(record), self.moderation_marker))

    async def _unknown(self, request: Request, record: Recorded) -> Response:
        raise ApiError(404, f"Invalid URL ({request.method} {request.url.path})")


def _parts(value: Any) -> list[dict[str, Any]]:
    """The content parts of a request's `input` (a string has none)."""
    if not isinstance(value, list):
        return []
    return [
        part
        for item in value
        if isinstance(item, dict) and isinstance(item.get("content"), list)
        for part in item["content"]
        if isinstance(part, dict)
    ]
