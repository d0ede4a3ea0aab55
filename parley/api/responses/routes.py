"""`/v1/responses`: Parley's agent behind the OpenAI Responses API, for any OpenAI SDK."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from parley.api.auth import CallerDep
from parley.api.errors import V1_ERRORS, bad_request, not_found
from parley.api.responses.objects import (
    EventStream,
    FastJSON,
    list_object,
    replay,
    response_object,
)
from parley.api.responses.openapi import CREATE_OPENAPI, CREATE_RESPONSES
from parley.api.responses.request import body_hash, parse_create, parse_json
from parley.deps import ResponsesDep, SessionDep, SettingsDep
from parley.store.queries.responses import delete_response, get_response

router = APIRouter(prefix="/v1", tags=["responses"], responses=V1_ERRORS)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/responses", responses=CREATE_RESPONSES, openapi_extra=CREATE_OPENAPI)
async def create_response(
    request: Request,
    caller: CallerDep,
    service: ResponsesDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Create a model response (OpenAI's `POST /v1/responses`), answered by Parley's agent."""
    body = parse_json(await request.body())
    create = parse_create(body)
    stream = EventStream() if create.stream else None
    started = await service.start(
        caller,
        create,
        idempotency_key=idempotency_key,
        request_hash=body_hash(body),
        stream=stream,
    )
    if started.replayed and stream is not None:
        stream = replay(started.record)
    if stream is not None:
        return StreamingResponse(
            stream.frames(settings.parley_stream_keepalive),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    if not create.background:  # a replay has no turn to wait for
        await service.wait(started, settings.parley_responses_wait)
    # As the turn left it: final, or still in progress past the wait.
    return FastJSON(response_object(started.record))


@router.get("/responses/{response_id}")
async def retrieve_response(response_id: str, caller: CallerDep, session: SessionDep) -> Response:
    record = await get_response(session, response_id=response_id, user_id=caller.user_id)
    if record is None:
        raise not_found("response", response_id)
    return FastJSON(response_object(record))


@router.delete("/responses/{response_id}")
async def remove_response(response_id: str, caller: CallerDep, session: SessionDep) -> Response:
    # Read first: a `store: false` response cannot be found, so it cannot be deleted either.
    found = await get_response(session, response_id=response_id, user_id=caller.user_id)
    if found is None or not await delete_response(
        session, response_id=response_id, user_id=caller.user_id
    ):
        raise not_found("response", response_id)
    await session.commit()
    return FastJSON({"id": response_id, "object": "response.deleted", "deleted": True})


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, caller: CallerDep, service: ResponsesDep) -> Response:
    record = await service.cancel(caller, response_id)
    return FastJSON(response_object(record))


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: str | None = None,
    before: str | None = None,
) -> Response:
    record = await get_response(session, response_id=response_id, user_id=caller.user_id)
    if record is None:
        raise not_found("response", response_id)
    items: list[dict[str, Any]] = list(record.request.get("input") or [])
    if order == "desc":
        items.reverse()
    ids = [item["id"] for item in items]
    for cursor, name in ((after, "after"), (before, "before")):
        if cursor is not None and cursor not in ids:
            raise bad_request(f"No input item with id '{cursor}'.", param=name)
    if after is not None:
        items = items[ids.index(after) + 1 :]
    if before is not None:
        # A `before` that comes ahead of `after` leaves nothing between them.
        remaining = [item["id"] for item in items]
        items = items[: remaining.index(before)] if before in remaining else []
    return FastJSON(list_object(items[:limit], has_more=len(items) > limit))
