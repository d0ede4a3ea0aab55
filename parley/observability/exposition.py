"""`/metrics` for a process with no HTTP app of its own (`parley worker --metrics-port`): a
bare ASGI app over prometheus_client's, served by uvicorn on the worker's own event loop.

Not `prometheus_client.start_http_server`: that runs a thread with a server of its own, which
the worker's shutdown would not stop, and which would not log through structlog.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import make_asgi_app

PATH = "/metrics"
_prometheus = make_asgi_app()


async def metrics_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`GET /metrics` answered from the process's registry; any other path is a 404."""
    if scope["type"] != "http":
        return
    if scope["path"] == PATH:
        await _prometheus(scope, receive, send)
        return
    body = b"not found"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")],
        }
    )
    await send({"type": "http.response.body", "body": body})
