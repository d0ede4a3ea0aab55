"""The console mounted on the app: its pages and static files, sign-in and sign-out, and how
its refusals are answered (a page, not JSON)."""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from parley.console import conversations, session, usage
from parley.console.render import HERE, page
from parley.console.viewer import CsrfRefused, NotVisible, ReadOnly, SignInRequired, form_of
from parley.deps import RuntimeDep, client_of, count_failure, guard_of
from parley.store.queries.users import authenticate

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)


def install(app: FastAPI) -> None:
    """Mount the console's pages and files on `app`, with its refusals answered as pages."""
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for routes in (router, conversations.router, usage.router):
        app.include_router(routes)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(NotVisible, _not_found)
    app.add_exception_handler(CsrfRefused, _forbidden)
    app.add_exception_handler(ReadOnly, _forbidden)


async def _sign_in(request: Request, exc: Exception) -> Response:
    if request.headers.get("hx-request"):
        # htmx follows redirects itself and would swap the sign-in form into a fragment.
        return Response(status_code=204, headers={"hx-redirect": "/console/login"})
    return RedirectResponse("/console/login", status_code=303)


async def _not_found(request: Request, exc: Exception) -> Response:
    return page(request, "error.html", {"message": "There is no such conversation."}, 404)


async def _forbidden(request: Request, exc: Exception) -> Response:
    message = (
        "Only an admin can change a conversation."
        if isinstance(exc, ReadOnly)
        else "This form has expired or did not come from the console: reload the page."
    )
    return page(request, "error.html", {"message": message}, 403)


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html", {"error": None})


def _from_elsewhere(request: Request) -> bool:
    """Whether a browser posted this from another site's page. Browsers name the page's origin
    on every cross-site POST; a request without `Origin` comes from a program, not a page."""
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    """Sign in with a user's API token: a refused token counts against the address's sign-in
    allowance like a refused bearer token on the API.

    There is no session yet to derive a CSRF token from, so the sign-in form is guarded by its
    origin instead: another site's page cannot sign the browser in as someone else (login CSRF)."""
    if _from_elsewhere(request):
        raise CsrfRefused
    verdict = guard_of(request).locked(client_of(request))
    if not verdict.allowed:
        log.info("console.signin_locked")
        error = f"Too many failed sign-ins from this address. Try again in {verdict.retry_after}s."
        refused = page(request, "login.html", {"error": error}, 429)
        refused.headers["retry-after"] = str(verdict.retry_after)
        return refused
    token = (await form_of(request)).get("token", "").strip()
    owner = None
    if token:
        async with runtime.sessions() as db:
            owner = await authenticate(db, token=token)
            await db.commit()
    if owner is None:
        log.info("console.signin_refused")
        await count_failure(request)
        return page(request, "login.html", {"error": "That token is not valid."}, 401)
    value, _ = session.issue(runtime.settings.console_key, token_id=owner.token_id)
    log.info("console.signed_in", user_id=owner.user_id, token_id=owner.token_id)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        session.COOKIE,
        value,
        max_age=session.SESSION_TTL_S,
        path=session.PATH,
        httponly=True,
        samesite="strict",
        # The scheme uvicorn saw: https directly, or X-Forwarded-Proto from a trusted proxy
        # (`--forwarded-allow-ips`), never the header from anyone else.
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out: the cookie is cleared. No CSRF check is needed to lose a session."""
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(
        session.COOKIE,
        path=session.PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
