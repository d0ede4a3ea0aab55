"""Who is calling `/v1`: a user's bearer token, checked against its stored hash, within the
user's rate limit (PARLEY_API_RATE_LIMIT requests per minute, all of the user's tokens
together: minting more tokens buys no more requests).

The bootstrap PARLEY_ADMIN_TOKEN is accepted too, as the built-in admin user `_admin` (created
on its first use), so that an operator can try the API before creating users. Tokens are never
logged: only the token's id once it is known.

A token found valid is remembered for `CALLER_TTL_S` (`CallerCache`), so that a busy caller
costs one lookup a second, not one a request; the requests that find it forgotten at once
share one lookup. A change committed in this process (a token
revoked, a user suspended, demoted or deleted) drops every remembered caller at once; one
committed by another process (the CLI, another `parley api`) is seen within `CALLER_TTL_S`.
Unknown tokens are never remembered: they are looked up every time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley.api.errors import APIError
from parley.api.signin import check_not_locked
from parley.config import Settings
from parley.deps import ApiLimiterDep, RuntimeDep, count_failure
from parley.queue.ratelimit import RateLimiter
from parley.runtime import Runtime
from parley.store.queries.users import auth_generation, authenticate, ensure_user, hash_token

log = structlog.get_logger(__name__)

BOOTSTRAP_USER = "_admin"
"""The user PARLEY_ADMIN_TOKEN acts as on `/v1`; user names cannot start with `_`."""


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    name: str
    is_admin: bool
    token_id: int | None
    """None when the caller used PARLEY_ADMIN_TOKEN rather than a user's token."""


CALLER_TTL_S = 1.0
"""How long a valid token's caller is remembered: the bound on seeing a revocation or a
suspension committed by another process."""
MAX_REMEMBERED = 10_000


class CallerCache:
    """Callers by token hash, each valid for `ttl` seconds and until this process commits a
    change to users or tokens (`auth_generation`)."""

    def __init__(
        self, ttl: float = CALLER_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, int, Caller]] = {}
        self._lookups: dict[str, tuple[int, asyncio.Future[Caller | None]]] = {}

    async def lookup(self, key: str, find: Callable[[], Awaitable[Caller | None]]) -> Caller | None:
        """The caller remembered under `key`, or the one `find` looks up. Requests that miss
        together share one lookup: 64 callers of one token found its caller forgotten in the
        same instant each second, and each looked it up, one after another. A request joins
        a lookup only if it started after the last change to users or tokens committed here,
        so that a revocation still refuses every request that comes after it. The lookup
        runs on its own, shielded: a request that is dropped does not cancel it for others."""
        caller = self.get(key)
        if caller is not None:
            return caller
        since = self.mark()
        under_way = self._lookups.get(key)
        if under_way is None or under_way[0] != since[1]:
            future = asyncio.ensure_future(find())
            under_way = self._lookups[key] = (since[1], future)
            future.add_done_callback(lambda done: self._found(key, done, since))
        return await asyncio.shield(under_way[1])

    def _found(
        self, key: str, done: asyncio.Future[Caller | None], since: tuple[float, int]
    ) -> None:
        under_way = self._lookups.get(key)
        if under_way is not None and under_way[1] is done:
            del self._lookups[key]
        # Reading the exception also marks it seen when no request waits any more.
        if done.cancelled() or done.exception() is not None:
            return
        caller = done.result()
        if caller is not None:
            self.put(key, caller, since=since)

    def get(self, key: str) -> Caller | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        at, generation, caller = entry
        if generation != auth_generation() or self._clock() - at >= self._ttl:
            del self._entries[key]
            return None
        return caller

    def put(self, key: str, caller: Caller, *, since: tuple[float, int]) -> None:
        """Remember `caller`, as looked up from `since` (`mark()` taken before the lookup, so
        that a change committed during the lookup is not hidden for a whole `ttl`)."""
        if self._ttl <= 0 or since[1] != auth_generation():
            return
        if len(self._entries) >= MAX_REMEMBERED:
            self._entries.clear()  # many live tokens at once: start over rather than grow
        self._entries[key] = (since[0], since[1], caller)

    def mark(self) -> tuple[float, int]:
        return self._clock(), auth_generation()


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def invalid_key(token: str | None) -> APIError:
    if token is None:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        # Like OpenAI's, naming only the key's last characters, never the key.
        message = (
            f"Incorrect API key provided: ...{token[-4:]}."
            if len(token) > 8
            else ("Incorrect API key provided.")
        )
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def is_admin_token(runtime: Runtime, token: str) -> bool:
    expected = runtime.settings.secret("parley_admin_token")
    return bool(expected) and hmac.compare_digest(token.encode(), (expected or "").encode())


async def find_caller(session: AsyncSession, runtime: Runtime, token: str) -> Caller | None:
    """The caller behind `token` (marking the token used), or None for a bad token."""
    if is_admin_token(runtime, token):
        user = await ensure_user(session, name=BOOTSTRAP_USER, is_admin=True)
        if user.status != "active":
            return None
        return Caller(user_id=user.id, name=user.name, is_admin=True, token_id=None)
    owner = await authenticate(session, token=token)
    if owner is None:
        return None
    return Caller(owner.user_id, owner.name, owner.is_admin, owner.token_id)


async def _look_up(runtime: Runtime, token: str) -> Caller | None:
    # A session of its own, closed before the endpoint runs, from the API's engine: on SQLite
    # a view of the one connection, not the channels' pool of one, whose background work it
    # would wait behind.
    async with runtime.api_sessions() as session:
        caller = await find_caller(session, runtime, token)
        await session.commit()
    return caller


async def current_caller(request: Request, runtime: RuntimeDep, limiter: ApiLimiterDep) -> Caller:
    """The authenticated, active user behind the bearer token, within its rate limit.
    Raises APIError 401 (missing, unknown, revoked token or suspended user) or 429."""
    token = bearer_token(request)
    if token is None:
        raise invalid_key(None)
    check_not_locked(request, openai_shaped=True)
    cache: CallerCache = request.app.state.callers
    caller = await cache.lookup(hash_token(token), lambda: _look_up(runtime, token))
    if caller is None:
        log.info("auth.refused", path=request.url.path)
        await count_failure(request)
        raise invalid_key(token)
    await check_rate(limiter, runtime.settings, caller)
    structlog.contextvars.bind_contextvars(user_id=caller.user_id, token_id=caller.token_id)
    return caller


def rate_key(caller: Caller) -> str:
    """One budget per user, whichever of their tokens (or PARLEY_ADMIN_TOKEN, for `_admin`)
    the request used; user ids are never reused, so a new user starts afresh."""
    return f"user:{caller.user_id}"


async def check_rate(limiter: RateLimiter, settings: Settings, caller: Caller) -> None:
    verdict = await limiter.hit(rate_key(caller))
    if verdict.allowed:
        return
    log.info("auth.rate_limited", user_id=caller.user_id, token_id=caller.token_id)
    limit = settings.parley_api_rate_limit
    raise APIError(
        429,
        f"Rate limit reached for this user: {limit} requests per minute, all of the "
        f"user's API keys together. Please try again in {verdict.retry_after}s.",
        code="rate_limit_exceeded",
        type="rate_limit_error",
        headers={"retry-after": str(verdict.retry_after)},
    )


CallerDep = Annotated[Caller, Depends(current_caller)]
