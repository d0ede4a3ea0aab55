"""Every channel's webhooks at ``/webhooks/{channel}``: the handshake here; signed POSTs are
answered by the lean door in `door.py`, before routing."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import PlainTextResponse

from parley.channels import registry
from parley.channels.base import Channel
from parley.deps import AccountsDep, SettingsDep
from parley.errors import UnknownChannel
from parley.ingress import verification

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


ChannelName = Annotated[str, Path(examples=registry.names())]
"""A channel's name; the registered ones are the schema's examples."""


async def get_channel(channel: ChannelName) -> Channel:
    """The channel named by the path; a name nobody registered is a 404, like any unknown path."""
    try:
        return registry.get(channel)
    except UnknownChannel:
        raise HTTPException(status_code=404, detail="Not Found") from None


ChannelDep = Annotated[Channel, Depends(get_channel)]


_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_DETAIL = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        }
    }
}
_NO_CHANNEL = {"description": "No channel of that name", "content": _DETAIL}


def _hub_parameter(name: str) -> dict[str, Any]:
    return {"in": "query", "name": name, "required": False, "schema": {"type": "string"}}


HANDSHAKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The channel's challenge, echoed"},
    400: {"description": "A NUL in the path or query (`api.edge.RefuseNul`)", "content": _DETAIL},
    403: {
        "description": "Not a handshake for this Parley (wrong verify token or mode)",
        "content": _TEXT,
    },
    404: _NO_CHANNEL,
}
HANDSHAKE_OPENAPI = {
    "parameters": [_hub_parameter(f"hub.{name}") for name in ("mode", "verify_token", "challenge")]
}
DELIVERY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Filed (or nothing in it to file); empty body"},
    400: {"description": "Signed, but not a payload of this channel", "content": _TEXT},
    401: {"description": "Missing or wrong signature", "content": _TEXT},
    404: _NO_CHANNEL,
    408: {"description": "The body did not arrive in time", "content": _TEXT},
    413: {"description": "Body over PARLEY_MAX_WEBHOOK_BYTES", "content": _TEXT},
}
DELIVERY_OPENAPI = {
    "parameters": [
        {
            "in": "header",
            "name": "X-Hub-Signature-256",
            "required": False,
            "description": "`sha256=` and the body's HMAC-SHA256 under the app secret",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


@router.post(
    "/{channel}",
    response_class=Response,
    responses=DELIVERY_RESPONSES,
    openapi_extra=DELIVERY_OPENAPI,
)
async def deliver(channel: ChannelName) -> Response:
    """A signed delivery of the channel's events (Meta's webhook POST).

    Declared for the OpenAPI document only: `door.WebhookDoor` answers every POST to a
    channel's path before routing, so this is never called."""
    raise HTTPException(status_code=404, detail="Not Found")


@router.get(
    "/{channel}",
    response_class=PlainTextResponse,
    responses=HANDSHAKE_RESPONSES,
    openapi_extra=HANDSHAKE_OPENAPI,
)
async def handshake(
    channel: ChannelDep, request: Request, settings: SettingsDep, accounts: AccountsDep
) -> Response:
    """The channel's subscription check: echo what it asks for when the request is ours."""
    directory = await accounts.snapshot()
    answer = verification.challenge(channel, request.query_params, settings, directory)
    if answer is None:
        log.warning("webhook.handshake_refused", channel=channel.name)
        return PlainTextResponse("verification failed", status_code=403)
    return PlainTextResponse(answer)
