"""Who is calling `/v1`: a user's bearer token, checked against its stored hash.

STUB: the interface the Responses API relies on; the users/tokens work replaces the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from parley.api.errors import APIError


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    name: str
    is_admin: bool
    token_id: int | None
    """None when the caller used PARLEY_ADMIN_TOKEN rather than a user's token."""


async def current_caller(request: Request) -> Caller:
    """The authenticated, active user behind the bearer token, within its rate limit.
    Raises APIError 401 (missing, unknown, revoked token or suspended user) or 429."""
    raise APIError(401, "not implemented", code="invalid_api_key")


CallerDep = Annotated[Caller, Depends(current_caller)]
