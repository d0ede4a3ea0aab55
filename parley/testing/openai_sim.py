"""A faithful stand-in for OpenAI's Responses and Conversations APIs, served over real HTTP.

Answers are decided by plain Python callables (`reply`, `tool_calls`) so tests can prove what
the upstream was asked and what it remembered; everything else (ids, usage, errors, streaming,
chains and conversations) behaves like the real API as the official SDK sees it.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from parley.testing.faults import ApiError, Handler, Recorded, Simulator, bearer_token
from parley.testing.openai_build import (
    Reply,
    SimTurn,
    ToolCalls,
    check_tool_outputs,
    conversation_id,
    echo_reply,
    instruction_tokens,
    json_object,
    list_default_desc,
    normalize_items,
    openai_error,
    response_body,
    validate_metadata,
    validate_request,
)
from parley.testing.openai_items import (
    InvalidInput,
    Item,
    assistant_message,
    function_call,
    item_tokens,
    message_texts,
    new_id,
    normalize_input,
)
from parley.testing.openai_moderation import moderation_answer
from parley.testing.openai_stream import response_events, sse_stream

__all__ = ["OpenAISimulator", "Reply", "SimTurn", "ToolCalls", "echo_reply"]


@dataclass
class _Stored:
    body: dict[str, Any]
    input_items: list[Item]
    context: list[Item]  # what a response continuing this one sees as its history


@dataclass
class _Conversation:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: list[Item] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


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
        self._state = threading.RLock()
        self._responses: dict[str, _Stored] = {}
        self._conversations: dict[str, _Conversation] = {}
        self.app = Starlette(routes=self._routes())

    # --- public helpers for tests ------------------------------------------------------
    def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation as if it expired upstream."""
        with self._state:
            return self._conversations.pop(conversation_id, None) is not None

    def conversation_items(self, conversation_id: str) -> list[Item]:
        with self._state:
            return list(self._conversations[conversation_id].items)

    def stored_response(self, response_id: str) -> dict[str, Any] | None:
        with self._state:
            stored = self._responses.get(response_id)
            return stored.body if stored else None

    @property
    def response_requests(self) -> list[Recorded]:
        return self.requests_to("/v1/responses", method="POST")

    def reset_state(self) -> None:
        with self._state:
            self._responses = {}
            self._conversations = {}
            self.prompts = None

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

        return [
            route("/v1/responses", self._create_response, "POST"),
            route("/v1/responses/{id}", self._get_response, "GET"),
            route("/v1/responses/{id}", self._delete_response, "DELETE"),
            route("/v1/responses/{id}/input_items", self._input_items, "GET"),
            route("/v1/conversations", self._create_conversation, "POST"),
            route("/v1/conversations/{id}", self._get_conversation, "GET"),
            route("/v1/conversations/{id}", self._update_conversation, "POST"),
            route("/v1/conversations/{id}", self._delete_conversation, "DELETE"),
            route("/v1/conversations/{id}/items", self._list_items, "GET"),
            route("/v1/conversations/{id}/items", self._add_items, "POST"),
            route("/v1/conversations/{id}/items/{item_id}", self._get_item, "GET"),
            route("/v1/moderations", self._moderate, "POST"),
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

    # --- responses ---------------------------------------------------------------------
    async def _create_response(self, request: Request, record: Recorded) -> Response:
        body = json_object(record)
        validate_request(body)
        self._check_prompt(body.get("prompt"))
        history, conversation = self._history(body)
        try:
            input_items = normalize_input(body.get("input"))
        except InvalidInput as exc:
            raise ApiError(400, str(exc), param=exc.param) from None
        check_tool_outputs(history, input_items)
        history = self._fit_context(body, history, input_items)
        turn = SimTurn(
            body=body,
            user_texts=message_texts(input_items, "user"),
            input_items=input_items,
            history=history,
            conversation_id=conversation.id if conversation else None,
            previous_response_id=body.get("previous_response_id"),
        )
        output, text = await self._answer(turn)
        response = response_body(body, turn, output, text, turn.conversation_id)
        self._remember(response, turn, conversation)
        if body.get("stream"):
            stream = sse_stream(response_events(response), self.stream_delay)
            return StreamingResponse(stream, media_type="text/event-stream")
        return JSONResponse(response)

    def _history(self, body: dict[str, Any]) -> tuple[list[Item], _Conversation | None]:
        conversation_ref = body.get("conversation")
        previous = body.get("previous_response_id")
        if conversation_ref is not None and previous is not None:
            raise ApiError(
                400,
                "Mutually exclusive parameters: Ensure you are only providing one of: "
                "'previous_response_id' or 'conversation'.",
                code="mutually_exclusive_parameters",
                param="conversation",
            )
        with self._state:
            if conversation_ref is not None:
                conversation = self._conversations.get(conversation_id(conversation_ref))
                if conversation is None:
                    raise ApiError(
                        404,
                        f"Conversation with id '{conversation_id(conversation_ref)}' not found.",
                        param="conversation",
                    )
                return list(conversation.items), conversation
            if previous is not None:
                stored = self._responses.get(previous)
                if stored is None:
                    raise ApiError(
                        400,
                        f"Previous response with id '{previous}' not found.",
                        code="previous_response_not_found",
                        param="previous_response_id",
                    )
                return list(stored.context), None
        return [], None

    def _check_prompt(self, prompt: Any) -> None:
        """A deleted (or, after OpenAI retires them, any) dashboard prompt is a 404 naming it."""
        if prompt is None or self.prompts is None:
            return
        prompt_id = str(prompt.get("id", "")) if isinstance(prompt, dict) else ""
        versions = self.prompts.get(prompt_id)
        if versions is None:
            raise ApiError(404, f"Prompt with id '{prompt_id}' not found.", param="prompt")
        version = prompt.get("version")
        if version is not None and str(version) not in versions:
            raise ApiError(
                404,
                f"Prompt version '{version}' not found for prompt '{prompt_id}'.",
                param="prompt.version",
            )

    def _fit_context(
        self, body: dict[str, Any], history: list[Item], input_items: list[Item]
    ) -> list[Item]:
        if self.context_window is None:
            return history
        fixed = instruction_tokens(body) + sum(item_tokens(i) for i in input_items)
        history = list(history)
        while history and fixed + sum(item_tokens(i) for i in history) > self.context_window:
            if body.get("truncation") != "auto":
                break
            history.pop(0)  # "auto" drops the oldest items first
        if fixed + sum(item_tokens(i) for i in history) > self.context_window:
            raise ApiError(
                400,
                "Your input exceeds the context window of this model. "
                "Please adjust your input and try again.",
                code="context_length_exceeded",
                param="input",
            )
        return history

    async def _answer(self, turn: SimTurn) -> tuple[list[Item], str]:
        answered_tools = any(i["type"] == "function_call_output" for i in turn.input_items)
        calls = self.tool_calls(turn) if self.tool_calls and not answered_tools else None
        if calls:
            output = [function_call(c["name"], c.get("arguments", {})) for c in calls]
            return output, ""
        text = self.reply(turn)
        if inspect.isawaitable(text):
            text = await text
        return [assistant_message(str(text))], str(text)

    def _remember(
        self, response: dict[str, Any], turn: SimTurn, conversation: _Conversation | None
    ) -> None:
        new_items = turn.input_items + response["output"]
        with self._state:
            if conversation is not None:
                conversation.items.extend(new_items)
            if response.get("store", True):
                context = turn.history + new_items
                self._responses[response["id"]] = _Stored(response, turn.input_items, context)

    def _stored(self, request: Request) -> _Stored:
        response_id = request.path_params["id"]
        with self._state:
            stored = self._responses.get(response_id)
        if stored is None:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        return stored

    async def _get_response(self, request: Request, record: Recorded) -> Response:
        return JSONResponse(self._stored(request).body)

    async def _delete_response(self, request: Request, record: Recorded) -> Response:
        stored = self._stored(request)
        with self._state:
            self._responses.pop(stored.body["id"], None)
        return JSONResponse(
            {"id": stored.body["id"], "object": "response.deleted", "deleted": True}
        )

    async def _input_items(self, request: Request, record: Recorded) -> Response:
        items = self._stored(request).input_items
        return JSONResponse(list_default_desc(items, record.query))

    # --- conversations -----------------------------------------------------------------
    async def _create_conversation(self, request: Request, record: Recorded) -> Response:
        body = json_object(record, allow_empty=True)
        metadata = validate_metadata(body.get("metadata"))
        raw_items = body.get("items") or []
        if not isinstance(raw_items, list) or len(raw_items) > 20:
            raise ApiError(
                400, "Invalid 'items': expected an array of at most 20 items.", param="items"
            )
        items = normalize_items(raw_items, "items")
        conversation = _Conversation(new_id("conv"), int(time.time()), metadata, items)
        with self._state:
            self._conversations[conversation.id] = conversation
        return JSONResponse(conversation.public())

    def _conversation(self, request: Request) -> _Conversation:
        conversation_id = request.path_params["id"]
        with self._state:
            conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise ApiError(404, f"Conversation with id '{conversation_id}' not found.")
        return conversation

    async def _get_conversation(self, request: Request, record: Recorded) -> Response:
        return JSONResponse(self._conversation(request).public())

    async def _update_conversation(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        body = json_object(record)
        conversation.metadata = validate_metadata(body.get("metadata"))
        return JSONResponse(conversation.public())

    async def _delete_conversation(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        self.delete_conversation(conversation.id)
        return JSONResponse(
            {"id": conversation.id, "object": "conversation.deleted", "deleted": True}
        )

    async def _list_items(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        with self._state:
            items = list(conversation.items)
        return JSONResponse(list_default_desc(items, record.query))

    async def _add_items(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        raw_items = json_object(record).get("items")
        if not isinstance(raw_items, list) or not 1 <= len(raw_items) <= 20:
            raise ApiError(400, "Invalid 'items': expected 1 to 20 items.", param="items")
        items = normalize_items(raw_items, "items")
        with self._state:
            conversation.items.extend(items)
        return JSONResponse(list_default_desc(items, {"order": "asc", "limit": "100"}))

    async def _get_item(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        item_id = request.path_params["item_id"]
        with self._state:
            found = [item for item in conversation.items if item["id"] == item_id]
        if not found:
            raise ApiError(404, f"Item with id '{item_id}' not found.")
        return JSONResponse(found[0])
