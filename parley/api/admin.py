"""The admin API: what an operator needs to see and repair (admin bearer token)."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from parley import operator
from parley.api.errors import ADMIN_ERRORS
from parley.api.signin import check_not_locked
from parley.deps import RowId, RuntimeDep, SessionDep, count_failure
from parley.store.queries.turns import failed_messages
from parley.store.queries.usage import conversation_usage, daily_usage
from parley.store.queries.users import authenticate, user_by_name

bearer = HTTPBearer(auto_error=False)


BOOTSTRAP_ADMIN = "_admin"
"""Who PARLEY_ADMIN_TOKEN acts as (an operator's name where the request names none)."""


async def require_admin(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """PARLEY_ADMIN_TOKEN, or the token of an active admin user; returns who is calling.
    Refused tokens count towards the client's lock-out (`api.signin`)."""
    given = credentials.credentials if credentials else ""
    if given:
        check_not_locked(request, openai_shaped=False)
    expected = runtime.settings.secret("parley_admin_token")
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        # `_admin` can no longer be suspended; one suspended before that stays refused here as
        # on `/v1` (unset PARLEY_ADMIN_TOKEN to disable it).
        async with runtime.sessions() as session:
            builtin = await user_by_name(session, name=BOOTSTRAP_ADMIN)
        if builtin is None or builtin.status == "active":
            return BOOTSTRAP_ADMIN
        given = ""
    owner = None
    if given:
        # Its own short session: on SQLite the endpoint's session needs the one connection.
        async with runtime.sessions() as session:
            owner = await authenticate(session, token=given)
            await session.commit()
    if owner is not None and not owner.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token's user is not an admin")
    if owner is None:
        if credentials:
            await count_failure(request)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid admin bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return owner.name


AdminDep = Annotated[str, Depends(require_admin)]
"""The calling admin's user name (`_admin` for PARLEY_ADMIN_TOKEN)."""


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)


class MessagePublic(BaseModel):
    id: int
    conversation_id: int
    sequence_no: int
    direction: str
    sender: str
    kind: str
    text: str | None
    status: str
    error: str | None
    attempts: int
    created_at: datetime

    model_config = {"from_attributes": True}


class RetryAccepted(BaseModel):
    id: int
    conversation_id: int
    status: str = "received"


@router.get("/messages/failed")
async def list_failed(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[MessagePublic]:
    """Inbound messages that got the fallback reply (upstream down, dead-lettered)."""
    return [MessagePublic.model_validate(m) for m in await failed_messages(session, limit=limit)]


@router.post("/messages/{message_id}/retry", status_code=status.HTTP_202_ACCEPTED)
async def retry(message_id: RowId, session: SessionDep, runtime: RuntimeDep) -> RetryAccepted:
    """Answer a failed message again: it goes back in line and the agent runs a new turn."""
    conversation_id = await operator.retry(session, runtime, message_id=message_id)
    if conversation_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no failed inbound message with that id")
    return RetryAccepted(id=message_id, conversation_id=conversation_id)


class UsagePublic(BaseModel):
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal

    model_config = {"from_attributes": True}


class UsageDayPublic(UsagePublic):
    day: date
    account_id: int
    model: str


class UsageTotalsPublic(UsagePublic):
    conversation_id: int


@router.get("/usage")
async def usage_by_day(
    session: SessionDep,
    since: date | None = None,
    until: date | None = None,
    account_id: RowId | None = None,
) -> list[UsageDayPublic]:
    """Requests, tokens and cost per UTC day, account and model."""
    rows = await daily_usage(session, since=since, until=until, account_id=account_id)
    return [UsageDayPublic.model_validate(row) for row in rows]


@router.get("/conversations/{conversation_id}/usage")
async def usage_of_conversation(conversation_id: RowId, session: SessionDep) -> UsageTotalsPublic:
    totals = await conversation_usage(session, conversation_id=conversation_id)
    return UsageTotalsPublic(conversation_id=conversation_id, **asdict(totals))
