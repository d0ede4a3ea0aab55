"""Every channel's webhooks at ``/webhooks/{channel}``: the handshake here; signed POSTs are
answered by the lean door in `door.py`, before routing."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse

from parley.channels import registry
from parley.channels.base import Channel
from parley.deps import AccountsDep, SettingsDep
from parley.errors import UnknownChannel
from parley.ingress import verification

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def get_channel(channel: str) -> Channel:
    """The channel named by the path; a name nobody registered is a 404, like any unknown path."""
    try:
        return registry.get(channel)
    except UnknownChannel:
        raise HTTPException(status_code=404, detail="Not Found") from None


ChannelDep = Annotated[Channel, Depends(get_channel)]


@router.get("/{channel}", response_class=PlainTextResponse)
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
