"""Reading an ASGI request's body whole, bounded in size and in time.

One reader for every door: the webhook door (`parley.ingress.door`) and the API's body limits
and text rewriting (`parley.api.limits`, `parley.api.edge`). Each keeps its own limit and its
own answers (413, 408, nothing to a client that left); only the reading is shared.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


def _announced_too_large(scope: Scope, limit: int) -> bool:
    """Whether the Content-Length header announces more than `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return True
    return False


async def read_body(
    scope: Scope, receive: Receive, *, limit: int | None = None, timeout: float | None = None
) -> bytes:
    """The whole body.

    Raises:
        BodyTooLarge: its Content-Length or what has arrived passes `limit`, said as soon as
            it does, so that a huge body is never held in memory.
        BodyTimeout: it has not all arrived within `timeout` seconds (a client trickling it
            holds a connection for no longer).
        ClientGone: the client hung up first.
    """
    if limit is not None and _announced_too_large(scope, limit):
        raise BodyTooLarge
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
                if limit is not None and size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyTimeout from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` for the app behind a middleware that read the body: the body held, then
    the client's own events (a disconnect while the app answers)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
