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
POSTs are the door's (`parley.ingress.door`), which applies the same rules with its own limit,
and counts its refusals in its metrics.

A client that hangs up mid-body is one log line (`http.client_gone`), never a traceback.
"""

from __future__ import annotations

import asyncio

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.api.errors import APIError, is_v1_path
from parley.config import Settings

log = structlog.get_logger(__name__)

ADMIN_MAX_BYTES = 64 * 1024
"""Every admin body (an account, a user, a prompt) is small; no setting needed."""
WEBHOOKS = "/webhooks/"


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


def announced_too_large(scope: Scope, limit: int) -> bool:
    """Whether the Content-Length header announces more than `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return True
    return False


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body, or `BodyTooLarge` as soon as more than `limit` bytes have arrived,
    `BodyTimeout` when it has not all arrived within `timeout` seconds, `ClientGone` when the
    client hung up first."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyTimeout from None


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
            if announced_too_large(scope, limit):
                raise BodyTooLarge
            body = await read_body(receive, limit, self.timeout)
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
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body held here, then the client's own events (a disconnect while streaming)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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
