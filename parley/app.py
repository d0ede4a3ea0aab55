"""`create_app(settings)`: the HTTP doors on one runtime, built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.agent.prompts import profile_exists
from parley.api import (
    accounts,
    admin,
    contacts,
    conversations,
    errors,
    health,
    me,
    models,
    prompts,
    users,
)
from parley.api.auth import CallerCache
from parley.api.edge import RefuseNul, StorableText
from parley.api.limits import BodyLimits
from parley.api.responses import routes as responses
from parley.config import Settings
from parley.console import site as console
from parley.deps import SignInGuard
from parley.ingress import webhooks
from parley.ingress.door import Door, WebhookDoor, open_inbox
from parley.observability import tracing
from parley.observability.correlation import CorrelationIdMiddleware
from parley.queue.ratelimit import build_rate_limiter
from parley.responses.lease import ResponseLease
from parley.responses.service import ResponsesService
from parley.responses.turn import TurnRunner
from parley.runtime import Role, Runtime, open_runtime
from parley.store.direct import DirectWrites

log = structlog.get_logger(__name__)


def create_app(settings: Settings, role: Role = "serve") -> FastAPI:
    """The ASGI app. `role` says which background loops run in this process besides HTTP."""

    door = Door(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # API processes stay cheap: they only append to the inbox, and `parley worker`
        # processes file it. `serve` files in-process, woken by each commit.
        async with (
            open_runtime(settings, role) as runtime,
            open_inbox(door, runtime, file_here=role == "serve"),
        ):
            service = build_responses(runtime)
            # Every process serving /v1 renews its own responses and sweeps dead processes'.
            lease = ResponseLease(
                sessions=runtime.sessions,
                running=service.running,
                lease=settings.parley_response_lease_seconds,
            )
            lease.start()
            limiter = build_rate_limiter(settings.parley_api_rate_limit, settings.redis_url)
            app.state.runtime = runtime
            app.state.responses = service
            app.state.api_limiter = limiter
            log.info("app.started", role=role, queue=settings.queue_backend)
            try:
                yield
            finally:
                # Turns finishing in their grace time are still renewed.
                await service.close(settings.parley_shutdown_grace)
                await lease.stop()
                await limiter.close()

    app = ParleyApp(door=door, title="Parley", version="0.1.0", lifespan=lifespan)
    app.state.callers = CallerCache()
    app.state.signin_guard = SignInGuard(settings.parley_auth_failure_limit)
    app.add_middleware(StorableText)
    app.add_middleware(RefuseNul)
    app.add_middleware(CorrelationIdMiddleware)
    # Ahead of everything that reads a body: sizes and read times bounded (webhooks: the door,
    # which `ParleyApp` puts ahead of all of these).
    app.add_middleware(BodyLimits, settings=settings)
    # `/v1/responses` first: routes are matched in order, and it is the busiest after the
    # webhooks (which the door answers before any routing).
    for router in (
        responses.router,
        webhooks.router,
        health.router,
        admin.router,
        accounts.router,
        contacts.router,
        conversations.router,
        prompts.router,
        users.router,
        me.router,
        models.router,
    ):
        app.include_router(router)
    console.install(app)
    errors.install(app)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.add_exception_handler(PoolTimeout, _store_unavailable)
    return app


class ParleyApp(FastAPI):
    """FastAPI with the webhook door in front of it: a signed webhook POST, the hottest
    request by far, is answered before FastAPI's own layers (its entry, error, telemetry and
    body-limit middleware) and Parley's run; every other request goes through them untouched.
    Inside the request's trace span, when tracing is on."""

    def __init__(self, *, door: Door, **options: Any) -> None:
        # Parley traces each request itself (`observability.tracing`: OpenTelemetry's ASGI
        # middleware, outermost, the door inside it) and keeps its own metrics. FastAPI's
        # native telemetry would only repeat them, and its check of the global providers
        # (three environment look-ups) ran ahead of every request, webhooks included.
        options.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
        super().__init__(**options)
        self._door = door
        self._front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The door goes ahead of FastAPI's and Starlette's own entry too (each a call and a
        # check per request); built on first use, when tracing has been configured.
        front = self._front
        if front is None:
            front = self._front = tracing.trace_requests(WebhookDoor(super().__call__, self._door))
        await front(scope, receive, send)


def build_responses(runtime: Runtime) -> ResponsesService:
    """The Responses API's turns, on the same agent and input checks as the channels."""
    settings = runtime.settings
    direct = DirectWrites.of(runtime.api_engine)
    runner = TurnRunner(
        sessions=runtime.api_sessions,
        agent=runtime.agent,
        gate=runtime.gate,
        prices=runtime.prices,
        context=settings.parley_context,
        refusal=settings.parley_moderation_reply,
        direct=direct,
    )
    return ResponsesService(
        sessions=runtime.api_sessions,
        agent=runtime.agent,
        runner=runner,
        profiles=profile_exists,
        direct=direct,
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # A 5xx makes Meta deliver the webhook again later, so nothing is lost while the store is down.
    log.error("store.unavailable", path=request.url.path, error=type(exc).__name__)
    if errors.is_v1(request):
        return errors.APIError(503, "The service is briefly unavailable; retry shortly.").response()
    return PlainTextResponse("store unavailable", status_code=503)
