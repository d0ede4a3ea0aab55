"""Self-service for a Responses API user with their own token: profile, tokens, write-only
secrets for their agent tools, and usage. Under `/v1`, so errors are OpenAI-shaped."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, status
from pydantic import BaseModel, Field

from parley.api.auth import CallerDep
from parley.api.errors import V1_ERRORS, APIError, not_found
from parley.api.users import (
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserPublic,
    UserUsageDayPublic,
    token_created,
)
from parley.deps import RowId, RuntimeDep, SessionDep
from parley.errors import SecretInvalid, SecretsDisabled, TooManyTokens
from parley.store.queries import users as queries
from parley.store.queries.usage import user_daily_usage

SECRET_NAME = r"^[A-Za-z0-9_.-]{1,128}$"
"""The names an HTTP tool's `{secret:NAME}` can refer to."""

router = APIRouter(prefix="/v1/me", tags=["me"], responses=V1_ERRORS)


class ListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]


class SecretSet(BaseModel):
    value: str = Field(min_length=1, max_length=8192)


class SecretPublic(BaseModel):
    """A secret's name and dates: its value is never returned."""

    name: str
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class SecretDeleted(BaseModel):
    name: str
    deleted: bool = True


SecretName = Annotated[str, Path(pattern=SECRET_NAME)]


@router.get("")
async def profile(caller: CallerDep, session: SessionDep) -> UserPublic:
    user = await queries.user_by_id(session, user_id=caller.user_id)
    if user is None:  # deleted between the token check and now
        raise not_found("user", str(caller.user_id))
    return UserPublic.model_validate(user)


@router.get("/tokens")
async def list_tokens(caller: CallerDep, session: SessionDep) -> ListPublic:
    rows = await queries.list_tokens(session, user_id=caller.user_id)
    return ListPublic(data=[TokenPublic.model_validate(row) for row in rows])


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def issue_token(
    caller: CallerDep,
    session: SessionDep,
    runtime: RuntimeDep,
    body: Annotated[TokenCreate | None, Body()] = None,
) -> TokenCreated:
    """Another token for the caller, shown once; at most PARLEY_MAX_TOKENS_PER_USER live."""
    name = body.name if body else None
    limit = runtime.settings.parley_max_tokens_per_user
    try:
        issued = await queries.issue_token(session, user_id=caller.user_id, name=name, limit=limit)
    except TooManyTokens as exc:
        raise APIError(409, str(exc), code="too_many_tokens") from exc
    await session.commit()
    return token_created(issued)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: RowId, caller: CallerDep, session: SessionDep) -> TokenPublic:
    row = await queries.revoke_token(session, user_id=caller.user_id, token_id=token_id)
    if row is None:
        raise not_found("token", str(token_id), param="token_id")
    await session.commit()
    return TokenPublic.model_validate(row)


@router.get("/secrets")
async def list_secrets(caller: CallerDep, session: SessionDep) -> ListPublic:
    rows = await queries.secret_names(session, user_id=caller.user_id)
    return ListPublic(data=[SecretPublic.model_validate(row) for row in rows])


@router.put("/secrets/{name}")
async def set_secret(
    name: SecretName, body: SecretSet, caller: CallerDep, session: SessionDep, runtime: RuntimeDep
) -> SecretPublic:
    """Store the secret encrypted; its tools read it as `{secret:NAME}`. Never echoed back."""
    try:
        row = await queries.set_secret(
            session, user_id=caller.user_id, name=name, value=body.value, box=runtime.secrets
        )
    except SecretInvalid as exc:
        raise APIError(400, str(exc), param="value", code="invalid_secret") from exc
    except SecretsDisabled as exc:
        raise APIError(
            400,
            "Secrets are not enabled on this server: its operator must set PARLEY_SECRET_KEY.",
            code="secrets_disabled",
        ) from exc
    await session.commit()
    return SecretPublic.model_validate(row)


@router.delete("/secrets/{name}")
async def delete_secret(name: SecretName, caller: CallerDep, session: SessionDep) -> SecretDeleted:
    if not await queries.delete_secret(session, user_id=caller.user_id, name=name):
        raise APIError(404, f"No secret named '{name}'.", param="name", code="not_found")
    await session.commit()
    return SecretDeleted(name=name)


@router.get("/usage")
async def usage(
    caller: CallerDep, session: SessionDep, since: date | None = None, until: date | None = None
) -> ListPublic:
    """The caller's requests, tokens and cost per UTC day and model."""
    rows = await user_daily_usage(session, since=since, until=until, user_id=caller.user_id)
    return ListPublic(data=[UserUsageDayPublic.model_validate(row) for row in rows])
