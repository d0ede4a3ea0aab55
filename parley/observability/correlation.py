"""A correlation id per HTTP request, bound to every log line the request causes and stored on
the messages it brings in, so one id follows a message from webhook to send."""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# A caller's id is reused only when it looks like an id, so logs cannot be forged through it.
ACCEPTABLE = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = incoming_correlation_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = correlation_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((HEADER, correlation_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            await self.app(scope, receive, send_with_id)


def incoming_correlation_id(scope: Scope) -> str | None:
    """The caller's `X-Request-ID`, when it looks like an id."""
    for name, value in scope.get("headers", []):
        if name == HEADER:
            candidate = value.decode("latin-1")
            return candidate if ACCEPTABLE.match(candidate) else None
    return None
