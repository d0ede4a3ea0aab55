"""The inbox and a conversation's page: what the admin API lists and shows, as pages that
refresh themselves, and the operator's forms (take over, reply, hand back, retry).

Live updates poll a fragment every 1.5 s with the marker of what the page shows
(`inbox_version`, `conversation_version`, read from the database so that any process answers
alike); while nothing changed the answer is an empty 204, which htmx leaves unswapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from parley import operator
from parley.console.render import page
from parley.console.viewer import AdminDep, NotVisible, Viewer, ViewerDep, form_of
from parley.deps import MAX_ROW_ID, RowId, RuntimeDep, SessionDep
from parley.errors import ConversationModeConflict, ConversationNotFound
from parley.store.queries import conversations as queries
from parley.store.queries.conversations import ConversationFilter, ConversationRow, CursorInvalid

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
FILTERS = ("channel", "account_id", "mode", "waiting", "failed", "q")
CHANNELS = ("whatsapp", "messenger", "instagram", "api")


def _flag(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


def _row_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 1 <= int(value) <= MAX_ROW_ID else None


def inbox_filter(params: Mapping[str, str], viewer: Viewer) -> ConversationFilter:
    """The GET form's filters as the admin API's; a plain user's are narrowed to their own
    account whatever the form says (an id no account has when they have none yet)."""
    account_id = _row_id(params.get("account_id"))
    if not viewer.is_admin:
        account_id = viewer.account_id or MAX_ROW_ID
    mode = params.get("mode")
    return ConversationFilter(
        channel=params.get("channel") or None,
        account_id=account_id,
        mode=mode if mode in ("agent", "human") else None,
        waiting=_flag(params.get("waiting")),
        failed=_flag(params.get("failed")),
        q=(params.get("q") or "").strip()[:255] or None,
    )


async def _inbox_context(request: Request, session: SessionDep, viewer: Viewer) -> dict[str, Any]:
    params = request.query_params
    cursor = params.get("cursor") or None
    try:
        listing = await queries.list_conversations(
            session, where=inbox_filter(params, viewer), limit=PAGE_SIZE, cursor=cursor
        )
    except CursorInvalid:
        listing = await queries.list_conversations(
            session, where=inbox_filter(params, viewer), limit=PAGE_SIZE
        )
        cursor = None
    chosen = {k: params.get(k, "") for k in FILTERS}
    query = urlencode({k: v for k, v in chosen.items() if v})
    return {
        "viewer": viewer,
        "rows": listing.items,
        "filters": chosen,
        "channels": CHANNELS,
        "query": query,
        "live": cursor is None,
        "next": urlencode({**dict(p for p in chosen.items() if p[1]), "cursor": c})
        if (c := listing.next_cursor)
        else None,
        "version": await queries.inbox_version(session),
    }


@router.get("")
@router.get("/conversations")
async def inbox(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    return page(request, "inbox.html", await _inbox_context(request, session, viewer))


@router.get("/conversations/rows")
async def inbox_rows(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    """The inbox's list, for the page's poll: 204 while the store's marker is the page's."""
    if request.query_params.get("v") == await queries.inbox_version(session):
        return Response(status_code=204)
    return page(request, "_rows.html", await _inbox_context(request, session, viewer))


async def _visible(session: SessionDep, viewer: Viewer, conversation_id: int) -> ConversationRow:
    row = await queries.conversation_row(session, conversation_id=conversation_id)
    if row is None or not viewer.sees(row):
        raise NotVisible
    return row


async def _conversation_context(
    session: SessionDep, viewer: Viewer, conversation_id: int
) -> dict[str, Any]:
    row = await _visible(session, viewer, conversation_id)
    messages = await queries.transcript(session, conversation_id=conversation_id, limit=1000)
    return {
        "viewer": viewer,
        "c": row,
        "messages": messages,
        "version": await queries.conversation_version(session, conversation_id=conversation_id),
    }


@router.get("/conversations/{conversation_id}")
async def conversation(
    conversation_id: RowId, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    context = await _conversation_context(session, viewer, conversation_id)
    return page(request, "conversation.html", {**context, "error": None})


@router.get("/conversations/{conversation_id}/live")
async def conversation_live(
    conversation_id: RowId, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """The transcript and mode, for the page's poll: 204 while nothing changed."""
    await _visible(session, viewer, conversation_id)
    marker = await queries.conversation_version(session, conversation_id=conversation_id)
    if request.query_params.get("v") == marker:
        return Response(status_code=204)
    context = await _conversation_context(session, viewer, conversation_id)
    return page(request, "_transcript.html", context)


def _back(conversation_id: int) -> RedirectResponse:
    # 303: the browser follows with a GET, so a reload does not post the form again.
    return RedirectResponse(f"/console/conversations/{conversation_id}", status_code=303)


async def _refused(
    request: Request, session: SessionDep, viewer: Viewer, conversation_id: int, error: str
) -> Response:
    context = await _conversation_context(session, viewer, conversation_id)
    return page(request, "conversation.html", {**context, "error": error}, 409)


@router.post("/conversations/{conversation_id}/takeover")
async def take_over(
    conversation_id: RowId,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> Response:
    await _visible(session, admin, conversation_id)
    try:
        await operator.take_over(
            session,
            runtime,
            conversation_id=conversation_id,
            operator=admin.name,
            reason="taken over in the console",
        )
    except ConversationNotFound as exc:  # erased since `_visible` read it
        raise NotVisible from exc
    return _back(conversation_id)


@router.post("/conversations/{conversation_id}/reply")
async def reply(
    conversation_id: RowId,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> Response:
    row = await _visible(session, admin, conversation_id)
    text = (await form_of(request)).get("text", "")[:20_000]
    try:
        ids = await operator.reply(
            session,
            runtime,
            conversation_id=conversation_id,
            channel=row.channel,
            operator=admin.name,
            text=text,
        )
    except ConversationNotFound as exc:
        raise NotVisible from exc
    except ConversationModeConflict:
        await session.rollback()
        error = "The agent has this conversation: take it over before replying."
        return await _refused(request, session, admin, conversation_id, error)
    if not ids:
        return await _refused(request, session, admin, conversation_id, "The reply is empty.")
    return _back(conversation_id)


@router.post("/conversations/{conversation_id}/handback")
async def hand_back(
    conversation_id: RowId,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> Response:
    await _visible(session, admin, conversation_id)
    answer_pending = (await form_of(request)).get("answer_pending") == "yes"
    try:
        await operator.give_back(
            session,
            runtime,
            conversation_id=conversation_id,
            operator=admin.name,
            answer_pending=answer_pending,
        )
    except ConversationNotFound as exc:
        raise NotVisible from exc
    except ConversationModeConflict:
        await session.rollback()
        error = "The agent has this conversation already."
        return await _refused(request, session, admin, conversation_id, error)
    return _back(conversation_id)


@router.post("/conversations/{conversation_id}/messages/{message_id}/retry")
async def retry(
    conversation_id: RowId,
    message_id: RowId,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> Response:
    await _visible(session, admin, conversation_id)
    retried = await operator.retry(session, runtime, message_id=message_id)
    if retried is None:
        error = "That message is not a failed customer message (it may have been retried)."
        return await _refused(request, session, admin, conversation_id, error)
    return _back(retried)
