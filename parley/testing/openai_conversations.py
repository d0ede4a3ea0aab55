"""The simulated Conversations API: `/v1/conversations` and its items."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from parley.testing.faults import ApiError, Recorded
from parley.testing.openai_build import (
    json_object,
    list_default_desc,
    normalize_items,
    validate_metadata,
)
from parley.testing.openai_items import new_id
from parley.testing.openai_state import SimConversation, SimState


class ConversationRoutes:
    def __init__(self, state: SimState) -> None:
        self._state = state

    async def create(self, request: Request, record: Recorded) -> Response:
        body = json_object(record, allow_empty=True)
        metadata = validate_metadata(body.get("metadata"))
        raw_items = body.get("items") or []
        if not isinstance(raw_items, list) or len(raw_items) > 20:
            raise ApiError(
                400, "Invalid 'items': expected an array of at most 20 items.", param="items"
            )
        items = normalize_items(raw_items, "items")
        conversation = SimConversation(new_id("conv"), int(time.time()), metadata, items)
        with self._state.lock:
            self._state.conversations[conversation.id] = conversation
        return JSONResponse(conversation.public())

    def _conversation(self, request: Request) -> SimConversation:
        conversation_id = request.path_params["id"]
        with self._state.lock:
            conversation = self._state.conversations.get(conversation_id)
        if conversation is None:
            raise ApiError(404, f"Conversation with id '{conversation_id}' not found.")
        return conversation

    async def get(self, request: Request, record: Recorded) -> Response:
        return JSONResponse(self._conversation(request).public())

    async def update(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        body = json_object(record)
        conversation.metadata = validate_metadata(body.get("metadata"))
        return JSONResponse(conversation.public())

    async def delete(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        with self._state.lock:
            if self._state.forget_conversation(conversation.id):
                self._state.deleted.append(("conversation", conversation.id))
        return JSONResponse(
            {"id": conversation.id, "object": "conversation.deleted", "deleted": True}
        )

    async def list_items(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        with self._state.lock:
            items = list(conversation.items)
        return JSONResponse(list_default_desc(items, record.query))

    async def add_items(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        raw_items = json_object(record).get("items")
        if not isinstance(raw_items, list) or not 1 <= len(raw_items) <= 20:
            raise ApiError(400, "Invalid 'items': expected 1 to 20 items.", param="items")
        items = normalize_items(raw_items, "items")
        with self._state.lock:
            conversation.items.extend(items)
        return JSONResponse(list_default_desc(items, {"order": "asc", "limit": "100"}))

    async def get_item(self, request: Request, record: Recorded) -> Response:
        conversation = self._conversation(request)
        item_id = request.path_params["item_id"]
        with self._state.lock:
            found = [item for item in conversation.items if item["id"] == item_id]
        if not found:
            raise ApiError(404, f"Item with id '{item_id}' not found.")
        return JSONResponse(found[0])
