"""The FastAPI dependencies every door shares (webhooks, the Responses and admin APIs), as
`Annotated` aliases. Doors import this module, never each other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from annotated_types import Interval
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings
from parley.queue.base import Queue
from parley.queue.ratelimit import MemoryRateLimiter, RateLimiter, Unlimited, Verdict
from parley.responses.service import ResponsesService
from parley.runtime import Runtime
from parley.store.queries.account_directory import AccountDirectory

MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Interval(ge=1, le=MAX_ROW_ID)]
"""A row's id in a path or query: what a BIGINT holds. Past it SQLite overflows and PostgreSQL
refuses the parameter, so the edge refuses it first (422 on /admin, OpenAI's 400 on /v1)."""


# Dependencies are `async def` even when they only read a field: FastAPI runs a plain `def`
# dependency in its thread pool, a trip to another thread and back on every request.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_queue(runtime: RuntimeDep) -> Queue:
    return runtime.queue


async def get_accounts(runtime: RuntimeDep) -> AccountDirectory:
    return runtime.accounts


async def get_responses(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


async def get_api_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.api_limiter
    return limiter


MAX_CLIENTS = 10_000


class SignInGuard:
    """Refused sign-ins per client address, in a fixed one-minute window (`api.signin` says
    why in memory and by peer address). One per app: the API's bearer tokens and the
    console's sign-in form count against the same allowance."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failures: MemoryRateLimiter | Unlimited = (
            MemoryRateLimiter(limit, max_keys=MAX_CLIENTS) if limit > 0 else Unlimited()
        )

    def locked(self, client: str) -> Verdict:
        """Whether `client` has used up its failures for this minute (no count taken)."""
        if isinstance(self._failures, Unlimited):
            return Verdict(True, 0)
        return self._failures.spent(client)

    async def failed(self, client: str) -> None:
        await self._failures.hit(client)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def guard_of(request: Request) -> SignInGuard:
    guard: SignInGuard = request.app.state.signin_guard
    return guard


async def count_failure(request: Request) -> None:
    await guard_of(request).failed(client_of(request))


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[Queue, Depends(get_queue)]
AccountsDep = Annotated[AccountDirectory, Depends(get_accounts)]
ResponsesDep = Annotated[ResponsesService, Depends(get_responses)]
ApiLimiterDep = Annotated[RateLimiter, Depends(get_api_limiter)]
