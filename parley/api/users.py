"""The admin API for users of the Responses API: create, list, suspend, reactivate, delete;
their tokens (issued once, revoked) and their usage. Admin bearer token, like `/admin`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Response, status
from pydantic import BaseModel, Field

from parley.api.admin import UsagePublic, require_admin
from parley.api.errors import ADMIN_ERRORS
from parley.deps import RowId, RuntimeDep, SessionDep
from parley.errors import TooManyTokens, UserConflict
from parley.store.models import ApiToken, User
from parley.store.queries import users as queries
from parley.store.queries.usage import user_daily_usage


class UserCreate(BaseModel):
    name: str = Field(pattern=queries.USER_NAME)
    is_admin: bool = False


class UserUpdate(BaseModel):
    is_admin: bool | None = None


class TokenCreate(BaseModel):
    name: str | None = Field(default=None, max_length=128)


class UserPublic(BaseModel):
    id: int
    name: str
    is_admin: bool
    status: str
    created_at: datetime

    model_config = {"from_attributes": True}


class TokenPublic(BaseModel):
    """A token as its owner recognises it: never its value, never its hash."""

    id: int
    user_id: int
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    model_config = {"from_attributes": True}


class TokenCreated(TokenPublic):
    token: str
    """The token itself, shown this once."""


class UserCreated(UserPublic):
    token: TokenCreated


class UserUsageDayPublic(UsagePublic):
    day: date
    user_id: int
    model: str


def token_created(issued: queries.IssuedToken) -> TokenCreated:
    return TokenCreated(**TokenPublic.model_validate(issued.row).model_dump(), token=issued.value)


router = APIRouter(
    prefix="/admin",
    tags=["users"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)


async def _user(session: SessionDep, user_id: RowId) -> User:
    user = await queries.user_by_id(session, user_id=user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user with id {user_id}")
    return user


UserDep = Annotated[User, Depends(_user)]


def _conflict(exc: UserConflict) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, session: SessionDep) -> UserCreated:
    """A new user and their first token, which this answer shows once."""
    try:
        user, issued = await queries.create_user(session, name=body.name, is_admin=body.is_admin)
    except UserConflict as exc:
        raise _conflict(exc) from exc
    await session.commit()
    public = UserPublic.model_validate(user).model_dump()
    return UserCreated(**public, token=token_created(issued))


@router.get("/users")
async def list_users(session: SessionDep) -> list[UserPublic]:
    return [UserPublic.model_validate(user) for user in await queries.list_users(session)]


@router.get("/users/{user_id}")
async def get_user(user: UserDep) -> UserPublic:
    return UserPublic.model_validate(user)


@router.patch("/users/{user_id}")
async def update_user(body: UserUpdate, user: UserDep, session: SessionDep) -> UserPublic:
    """Make a user an admin or not (the last active admin stays one)."""
    if body.is_admin is not None:
        try:
            await queries.set_admin(session, user=user, is_admin=body.is_admin)
        except UserConflict as exc:
            raise _conflict(exc) from exc
        await session.commit()
    return UserPublic.model_validate(user)


@router.post("/users/{user_id}/suspend")
async def suspend_user(user: UserDep, session: SessionDep) -> UserPublic:
    """Refuse all of the user's tokens until reactivated (their data stays)."""
    try:
        await queries.set_status(session, user=user, status="suspended")
    except UserConflict as exc:
        raise _conflict(exc) from exc
    await session.commit()
    return UserPublic.model_validate(user)


@router.post("/users/{user_id}/reactivate")
async def reactivate_user(user: UserDep, session: SessionDep) -> UserPublic:
    await queries.set_status(session, user=user, status="active")
    await session.commit()
    return UserPublic.model_validate(user)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user: UserDep, session: SessionDep) -> Response:
    """Delete the user with their tokens, secrets, responses and usage."""
    try:
        await queries.delete_user(session, user=user)
    except UserConflict as exc:
        raise _conflict(exc) from exc
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/{user_id}/tokens", status_code=status.HTTP_201_CREATED)
async def issue_token(
    user: UserDep,
    session: SessionDep,
    runtime: RuntimeDep,
    body: Annotated[TokenCreate | None, Body()] = None,
) -> TokenCreated:
    """Another token for the user, shown once (409 beyond PARLEY_MAX_TOKENS_PER_USER)."""
    try:
        issued = await queries.issue_token(
            session,
            user_id=user.id,
            name=body.name if body else None,
            limit=runtime.settings.parley_max_tokens_per_user,
        )
    except TooManyTokens as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    await session.commit()
    return token_created(issued)


@router.get("/users/{user_id}/tokens")
async def list_tokens(user: UserDep, session: SessionDep) -> list[TokenPublic]:
    rows = await queries.list_tokens(session, user_id=user.id)
    return [TokenPublic.model_validate(row) for row in rows]


@router.delete("/users/{user_id}/tokens/{token_id}")
async def revoke_token(token_id: RowId, user: UserDep, session: SessionDep) -> TokenPublic:
    """Revoke the token at once (revoking it again changes nothing)."""
    row: ApiToken | None = await queries.revoke_token(session, user_id=user.id, token_id=token_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user has no token with id {token_id}")
    await session.commit()
    return TokenPublic.model_validate(row)


@router.get("/users/{user_id}/usage")
async def usage_of_user(
    user: UserDep, session: SessionDep, since: date | None = None, until: date | None = None
) -> list[UserUsageDayPublic]:
    """The user's requests, tokens and cost per UTC day and model."""
    rows = await user_daily_usage(session, since=since, until=until, user_id=user.id)
    return [UserUsageDayPublic.model_validate(row) for row in rows]


@router.get("/usage/users")
async def usage_by_user(
    session: SessionDep,
    since: date | None = None,
    until: date | None = None,
    user_id: RowId | None = None,
) -> list[UserUsageDayPublic]:
    """Requests, tokens and cost per UTC day, user and model."""
    rows = await user_daily_usage(session, since=since, until=until, user_id=user_id)
    return [UserUsageDayPublic.model_validate(row) for row in rows]
