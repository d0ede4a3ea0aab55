"""Request bodies bounded before any route runs: in size, and in how long they take to arrive.

Pure ASGI, ahead of FastAPI and of every check that needs the body (a token, a signature): a
body announcing more than its path's limit (Content-Length) is answered 413 without a byte of
it read, and one that grows past the limit while it streams (chunked) is answered 413 as soon
as it does, so nobody can make the process hold more than the limit (what the client still
sends after a 413 the server discards, for no longer than its keep-alive timeout; the
connection stays open so an ordinary client, still sending, reads the 413 and not a reset).
The whole body must arrive within `PARLEY_BODY_TIMEOUT` seconds, else 408 and the connection
is closed. A body within its limit is held once here and handed on, as FastAPI would have
held it anyway.

Limits: `PARLEY_MAX_REQUEST_BYTES` on `/v1`, `ADMIN_MAX_BYTES` on every other path. Webhook
POSTs are the door's (`parley.ingress.door`), which applies the same rules (`parley.asgi_body`)
with its own limit, and counts its refusals in its metrics.

A client that hangs up mid-body is one log line (`http.client_gone`), never a traceback.
"""

from __future__ import annotations

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.api.errors import APIError, is_v1_path
from parley.asgi_body import BodyTimeout, BodyTooLarge, ClientGone, read_body, replay
from parley.config import Settings

log = structlog.get_logger(__name__)

ADMIN_MAX_BYTES = 64 * 1024
"""Every admin body (an account, a user, a prompt) is small; no setting needed."""
WEBHOOKS = "/webhooks/"


def _has_body(scope: Scope) -> bool:
    # HTTP/1.1: a request without either header has no body.
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


class BodyLimits:
    """ASGI middleware: every non-webhook request body bounded in size and time."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.v1_limit = settings.parley_max_request_bytes
        self.timeout = settings.parley_body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(WEBHOOKS) or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.v1_limit if is_v1_path(path) else ADMIN_MAX_BYTES
        try:
            body = await read_body(scope, receive, limit=limit, timeout=self.timeout)
        except BodyTooLarge:
            log.warning("http.body_too_large", path=path, limit=limit)
            message = f"The request body is too large: at most {limit} bytes."
            await refuse(send, path, 413, message, "request_too_large")
            return
        except BodyTimeout:
            log.warning("http.body_timeout", path=path, timeout=self.timeout)
            message = f"The request body did not arrive within {self.timeout:g} seconds."
            await refuse(send, path, 408, message, "request_timeout", close=True)
            return
        except ClientGone:
            log.info("http.client_gone", path=path)
            return
        await self.app(scope, replay(body, receive), send)


async def refuse(
    send: Send, path: str, status: int, message: str, code: str, *, close: bool = False
) -> None:
    """The answer, OpenAI's shape on `/v1` and `{"detail": …}` elsewhere; with `close`, on a
    connection that is then closed (a slow client's is)."""
    if is_v1_path(path):
        body = orjson.dumps(APIError(status, message, code=code).body())
    else:
        body = orjson.dumps({"detail": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
