"""Failed sign-ins slow down: after PARLEY_AUTH_FAILURE_LIMIT refused bearer tokens from one
client address in a minute, every request from it that carries a token (right or wrong) is
answered 429 with `retry-after` until the minute ends, so guessing PARLEY_ADMIN_TOKEN or a
user's token costs a minute per few guesses and a right guess during the lock tells nothing.

Counted in this process's memory (`MemoryRateLimiter`, at most `MAX_CLIENTS` addresses a
window; beyond that new addresses share one count), not in Redis: a guess costs the guesser a
request either way, and an unshared count across N `parley api` processes only multiplies the
allowance by N. The address is the connection's peer: behind a proxy every client shares the
proxy's, so one guesser locks everyone out for a minute at most, which is the safer failure.

The count itself (`parley.deps.SignInGuard`) is shared with the console's sign-in form: a token
guessed there costs the same allowance.
"""

from __future__ import annotations

import structlog
from fastapi import HTTPException, Request

from parley.api.errors import APIError
from parley.deps import client_of, guard_of

log = structlog.get_logger(__name__)


def check_not_locked(request: Request, *, openai_shaped: bool) -> None:
    """Raise 429 (`retry-after`) when the caller's address is locked out by failures."""
    verdict = guard_of(request).locked(client_of(request))
    if verdict.allowed:
        return
    log.info("auth.signin_locked", path=request.url.path)
    message = (
        f"Too many failed sign-ins from this address. Please try again in {verdict.retry_after}s."
    )
    headers = {"retry-after": str(verdict.retry_after)}
    if openai_shaped:
        raise APIError(
            429, message, code="too_many_failed_sign_ins", type="rate_limit_error", headers=headers
        )
    raise HTTPException(429, message, headers=headers)
