"""Who is looking at the console: the signed-in user behind the session cookie, checked again
on every request, and what they may see.

Admins see every conversation and act on them. A plain user sees only the conversations of
their own Responses API account, read-only; any other conversation is answered 404, as if it
did not exist, so that ids tell nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from parley.console import session
from parley.deps import RuntimeDep
from parley.store.queries.conversations import ConversationRow
from parley.store.queries.responses import api_account_id
from parley.store.queries.users import token_owner


class SignInRequired(Exception):
    """No valid session: the console answers with its sign-in page."""


class NotVisible(Exception):
    """Absent, or not this viewer's to see: answered 404 either way."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token: answered 403."""


class ReadOnly(Exception):
    """A plain user asked to change a conversation: answered 403."""


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: int
    name: str
    is_admin: bool
    account_id: int | None
    """A plain user's own `api` account (None before their first response); unused for admins."""
    csrf: str
    ticket: session.SessionTicket

    def sees(self, conversation: ConversationRow | None) -> bool:
        if conversation is None:
            return False
        return self.is_admin or conversation.account_id == self.account_id


async def current_viewer(request: Request, runtime: RuntimeDep) -> Viewer:
    """The session's user, if its token is still live and the user active.

    Raises:
        SignInRequired: no cookie, an altered or expired one, or a revoked token.
    """
    key = runtime.settings.console_key
    ticket = session.read(key, request.cookies.get(session.COOKIE))
    if ticket is None:
        raise SignInRequired
    # A session of its own, closed before the endpoint's: SQLite has one connection.
    async with runtime.sessions() as db:
        owner = await token_owner(db, token_id=ticket.token_id)
        account = None
        if owner is not None and not owner.is_admin:
            account = await api_account_id(db, user_id=owner.user_id)
    if owner is None:
        raise SignInRequired
    return Viewer(
        user_id=owner.user_id,
        name=owner.name,
        is_admin=owner.is_admin,
        account_id=account,
        csrf=session.csrf_token(key, ticket),
        ticket=ticket,
    )


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def acting_admin(request: Request, runtime: RuntimeDep, viewer: ViewerDep) -> Viewer:
    """An admin's state-changing request carrying the session's CSRF token (the form's hidden
    field, or htmx's header).

    Raises:
        CsrfRefused: the token is missing or wrong.
        ReadOnly: the viewer is not an admin.
    """
    form = await form_of(request)
    given = form.get(session.CSRF_FIELD) or request.headers.get(session.CSRF_HEADER)
    if not session.csrf_valid(runtime.settings.console_key, viewer.ticket, given):
        raise CsrfRefused
    if not viewer.is_admin:
        raise ReadOnly
    return viewer


AdminDep = Annotated[Viewer, Depends(acting_admin)]


async def form_of(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST, read once (the body's size is bounded upstream)."""
    cached: dict[str, str] | None = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        form = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=50))
    except ValueError:  # more fields than any console form has
        form = {}
    request.state.console_form = form
    return form
