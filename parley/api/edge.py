"""Requests refused before any route runs: a NUL in the path or query.

No id, name or filter of Parley's holds a NUL, and PostgreSQL cannot even take one as a text
parameter (it would fail the statement, and the caller would see a 503 for its own typo). One
check here covers every route, today's and tomorrow's.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.api.errors import APIError, is_v1_path

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
