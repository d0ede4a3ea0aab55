"""The console's session: a signed cookie that names a user's API token and an expiry, and
the CSRF token derived from it.

Stateless, so that any `parley api` process accepts a session another one opened (they share
the key, `Settings.console_key`). The cookie carries the token's id, never the token: each
request looks the id up again (`token_owner`), so revoking the token or suspending its user
ends every session opened with it at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

COOKIE = "parley_console"
PATH = "/console"
SESSION_TTL_S = 12 * 3600
"""How long a sign-in lasts: a working day, after which the token is asked for again."""
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class SessionTicket:
    token_id: int
    expires_at: int
    """Unix time."""


def _sign(key: bytes, purpose: str, payload: str) -> str:
    digest = hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(key: bytes, *, token_id: int, now: float | None = None) -> tuple[str, SessionTicket]:
    """A new session's cookie value and what it says."""
    ticket = SessionTicket(token_id, int(now if now is not None else time.time()) + SESSION_TTL_S)
    payload = f"{ticket.token_id}.{ticket.expires_at}"
    return f"{payload}.{_sign(key, 'session', payload)}", ticket


def read(key: bytes, value: str | None, *, now: float | None = None) -> SessionTicket | None:
    """What a cookie says, or None if it is missing, altered or expired."""
    if not value or value.count(".") != 2:
        return None
    token_id, expires_at, signature = value.split(".")
    payload = f"{token_id}.{expires_at}"
    if not hmac.compare_digest(signature.encode(), _sign(key, "session", payload).encode()):
        return None
    if not (token_id.isdigit() and expires_at.isdigit()):
        return None
    if int(expires_at) <= (now if now is not None else time.time()):
        return None
    return SessionTicket(int(token_id), int(expires_at))


def csrf_token(key: bytes, ticket: SessionTicket) -> str:
    """The token every state-changing request of this session carries: another site can make
    the browser send the cookie, never read this."""
    return _sign(key, "csrf", f"{ticket.token_id}.{ticket.expires_at}")


def csrf_valid(key: bytes, ticket: SessionTicket, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(
        (given or "").encode(), csrf_token(key, ticket).encode()
    )
