"""What every route gets before it runs: a NUL in the path or query is refused (`RefuseNul`),
text in a JSON body is made storable (`StorableText`).

No id, name or filter of Parley's holds a NUL, and PostgreSQL cannot even take one as a text
parameter (it would fail the statement, and the caller would see a 503 for its own typo). One
check here covers every route, today's and tomorrow's.
"""

from __future__ import annotations

import json
import re

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.api.errors import APIError, is_v1_path
from parley.asgi_body import ClientGone, read_body, replay
from parley.channels.text import storable_tree

MESSAGE = "The request's path or query holds a NUL character, which no id or name can hold."


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            await _refuse(scope, send)
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send) -> None:
    if is_v1_path(scope["path"]):
        body = orjson.dumps(APIError(400, MESSAGE, code="invalid_request").body())
    else:
        body = orjson.dumps({"detail": MESSAGE})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# The JSON escapes that parse into what no store holds: NUL, and any surrogate (a pair is
# rewritten too, harmlessly: it comes out as the one character it stands for).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89abcdefABCDEF])")


class StorableText:
    """JSON request bodies with a NUL or lone surrogate escape rewritten with those characters
    replaced by U+FFFD (`storable`), before any route parses them.

    A body holding ``"\\u0000"`` or ``"\\ud800"`` parses into a string that PostgreSQL or
    SQLite refuses, deep inside a request that already answered or a turn that already began
    (a /v1 response stuck ``in_progress``). Here, once, every JSON door (/v1, admin bodies,
    operators' replies) gets text the store can hold. The check is one regex scan of the body's
    bytes; only a body that matches is parsed and written again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or "/secrets/" in scope["path"]
        ):
            # A secret's value is never rewritten: one holding a control character is
            # refused by its route, since a changed secret would fail somewhere far later.
            await self.app(scope, receive, send)
            return
        try:
            # Unbounded here: `BodyLimits`, ahead of this, has already bounded and read it.
            body = await read_body(scope, receive)
        except ClientGone:  # hung up mid-body: nobody to answer
            return
        if _UNSTORABLE_ESCAPE.search(body):
            body = _storable_json(body)
        await self.app(scope, replay(body, receive), send)


def _storable_json(body: bytes) -> bytes:
    """`body` with its strings `storable`; a body that is not JSON is left for the route to
    refuse."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body
    try:
        return json.dumps(storable_tree(data), ensure_ascii=False).encode()
    except RecursionError:
        return body
