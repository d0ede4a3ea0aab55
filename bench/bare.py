"""The bare reference for the webhook benchmarks: the least a correct WhatsApp webhook
endpoint can do — read the raw body, check its HMAC-SHA256 against `X-Hub-Signature-256`,
answer 200 — on the same server stack as `parley serve` (Starlette on one uvicorn process with
uvicorn's "auto" loop and HTTP parser, as `parley serve` leaves them), so that Parley/bare is
what Parley itself adds, not what the server costs.

    python bench/bare.py --port 8001
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

PREFIX = "sha256="


def create_app(secret: str) -> Starlette:
    key = secret.encode()

    async def receive(request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-hub-signature-256", "")
        expected = PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not header or not hmac.compare_digest(header.strip().lower(), expected):
            return PlainTextResponse("invalid signature", status_code=401)
        return Response(status_code=200)

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/webhooks/whatsapp", receive, methods=["POST"]),
            Route("/readyz", ready, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ.get("META_APP_SECRET", "test-app-secret"))
    # The same uvicorn settings as `parley serve` (loop and http left to "auto").
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", proxy_headers=True)


if __name__ == "__main__":
    main()
