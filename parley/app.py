"""`create_app(settings)`: the HTTP doors on one runtime, built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from parley.api import admin, errors, health, me, prompts, users
from parley.api.responses import routes as responses
from parley.config import Settings
from parley.ingress import webhooks
from parley.observability.correlation import CorrelationIdMiddleware
from parley.runtime import Role, open_runtime

log = structlog.get_logger(__name__)


def create_app(settings: Settings, role: Role = "serve") -> FastAPI:
    """The ASGI app. `role` says which background loops run in this process besides HTTP."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, role) as runtime:
            app.state.runtime = runtime
            log.info("app.started", role=role, queue=settings.queue_backend)
            yield

    app = FastAPI(title="Parley", version="0.1.0", lifespan=lifespan)
    app.add_middleware(CorrelationIdMiddleware)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(prompts.router)
    app.include_router(users.router)
    app.include_router(me.router)
    app.include_router(responses.router)
    errors.install(app)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.add_exception_handler(PoolTimeout, _store_unavailable)
    return app


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # A 5xx makes Meta deliver the webhook again later, so nothing is lost while the store is down.
    log.error("store.unavailable", path=request.url.path, error=type(exc).__name__)
    if errors.is_v1(request):
        return errors.APIError(503, "The service is briefly unavailable; retry shortly.").response()
    return PlainTextResponse("store unavailable", status_code=503)
