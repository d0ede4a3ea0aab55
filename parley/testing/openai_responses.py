"""The simulated Responses API: `/v1/responses`, what each response continues (a conversation
or a previous response), the context window, and the answer the test's callables decide."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from parley.testing.faults import ApiError, Recorded
from parley.testing.openai_build import (
    Reply,
    SimTurn,
    ToolCalls,
    check_tool_outputs,
    conversation_id,
    formatted,
    instruction_tokens,
    json_object,
    list_default_desc,
    response_body,
    validate_request,
)
from parley.testing.openai_items import (
    InvalidInput,
    Item,
    assistant_message,
    function_call,
    item_tokens,
    message_texts,
    normalize_input,
)
from parley.testing.openai_state import SimConversation, SimState, StoredResponse
from parley.testing.openai_stream import response_events, sse_stream


class Behaviour(Protocol):
    """What a test may set on the simulator: read at each request, so a change applies to the
    next one."""

    reply: Reply
    tool_calls: ToolCalls | None
    stream_delay: float
    context_window: int | None
    prompts: dict[str, list[str]] | None


class ResponseRoutes:
    def __init__(self, behaviour: Behaviour, state: SimState) -> None:
        self._behaviour = behaviour
        self._state = state

    async def create(self, request: Request, record: Recorded) -> Response:
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
            stream = sse_stream(response_events(response), self._behaviour.stream_delay)
            return StreamingResponse(stream, media_type="text/event-stream")
        return JSONResponse(response)

    def _history(self, body: dict[str, Any]) -> tuple[list[Item], SimConversation | None]:
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
        with self._state.lock:
            if conversation_ref is not None:
                conversation = self._state.conversations.get(conversation_id(conversation_ref))
                if conversation is None:
                    raise ApiError(
                        404,
                        f"Conversation with id '{conversation_id(conversation_ref)}' not found.",
                        param="conversation",
                    )
                return list(conversation.items), conversation
            if previous is not None:
                stored = self._state.responses.get(previous)
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
        if prompt is None or self._behaviour.prompts is None:
            return
        prompt_id = str(prompt.get("id", "")) if isinstance(prompt, dict) else ""
        versions = self._behaviour.prompts.get(prompt_id)
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
        window = self._behaviour.context_window
        if window is None:
            return history
        fixed = instruction_tokens(body) + sum(item_tokens(i) for i in input_items)
        history = list(history)
        while history and fixed + sum(item_tokens(i) for i in history) > window:
            if body.get("truncation") != "auto":
                break
            history.pop(0)  # "auto" drops the oldest items first
        if fixed + sum(item_tokens(i) for i in history) > window:
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
        tool_calls = self._behaviour.tool_calls
        calls = tool_calls(turn) if tool_calls and not answered_tools else None
        if calls:
            output = [function_call(c["name"], c.get("arguments", {})) for c in calls]
            return output, ""
        text = self._behaviour.reply(turn)
        if inspect.isawaitable(text):
            text = await text
        text = formatted(turn.body, str(text))
        return [assistant_message(text)], text

    def _remember(
        self, response: dict[str, Any], turn: SimTurn, conversation: SimConversation | None
    ) -> None:
        new_items = turn.input_items + response["output"]
        with self._state.lock:
            if conversation is not None:
                conversation.items.extend(new_items)
            if response.get("store", True):
                context = turn.history + new_items
                self._state.responses[response["id"]] = StoredResponse(
                    response, turn.input_items, context
                )

    def _stored(self, request: Request) -> StoredResponse:
        response_id = request.path_params["id"]
        with self._state.lock:
            stored = self._state.responses.get(response_id)
        if stored is None:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        return stored

    async def get(self, request: Request, record: Recorded) -> Response:
        return JSONResponse(self._stored(request).body)

    async def delete(self, request: Request, record: Recorded) -> Response:
        stored = self._stored(request)
        with self._state.lock:
            if self._state.responses.pop(stored.body["id"], None) is not None:
                self._state.deleted.append(("response", stored.body["id"]))
        return JSONResponse(
            {"id": stored.body["id"], "object": "response.deleted", "deleted": True}
        )

    async def input_items(self, request: Request, record: Recorded) -> Response:
        items = self._stored(request).input_items
        return JSONResponse(list_default_desc(items, record.query))
