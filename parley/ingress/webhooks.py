"""Every channel's webhooks at ``/webhooks/{channel}``: the handshake, then signed POSTs stored
before they are acknowledged."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse

from parley.channels import registry
from parley.channels.base import Channel
from parley.deps import QueueDep, SessionDep, SettingsDep
from parley.errors import BadPayload, BadSignature, UnknownChannel, WebhookNotConfigured
from parley.observability.metrics import WEBHOOK_MESSAGES
from parley.store.queries.events import apply_events
from parley.store.queries.inbound import apply_statuses, record_inbound

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
async def handshake(channel: ChannelDep, request: Request, settings: SettingsDep) -> Response:
    """The channel's subscription check: echo what it asks for when the request is ours."""
    answer = channel.handshake(request.query_params, settings)
    if answer is None:
        log.warning("webhook.handshake_refused", channel=channel.name)
        return PlainTextResponse("verification failed", status_code=403)
    return PlainTextResponse(answer)


@router.post("/{channel}")
async def receive(
    channel: ChannelDep,
    request: Request,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> Response:
    body = await request.body()
    try:
        channel.verify(body, request.headers, settings)
    except WebhookNotConfigured:
        log.error("webhook.no_app_secret", channel=channel.name)
        return PlainTextResponse("webhook signing is not configured", status_code=401)
    except BadSignature:
        log.warning("webhook.bad_signature", channel=channel.name)
        return PlainTextResponse("invalid signature", status_code=401)
    try:
        parsed = channel.parse(body)
    except BadPayload as exc:
        log.warning("webhook.bad_payload", channel=channel.name, reason=str(exc))
        return PlainTextResponse("invalid payload", status_code=400)

    waiting = await record_inbound(
        session, messages=parsed.messages, correlation_id=request.state.correlation_id
    )
    moved = await apply_statuses(session, statuses=parsed.statuses)
    events = await apply_events(
        session, events=parsed.events, correlation_id=request.state.correlation_id
    )
    await session.commit()  # durable before the channel sees 200
    await _signal(queue, waiting)
    WEBHOOK_MESSAGES.labels(channel.name).inc(len(parsed.messages))
    log.info(
        "webhook.accepted",
        channel=channel.name,
        messages=len(parsed.messages),
        statuses=len(parsed.statuses),
        statuses_applied=moved,
        skipped=parsed.skipped,
        **({"events": len(parsed.events), "events_applied": events} if parsed.events else {}),
    )
    return Response(status_code=200)


async def _signal(queue: QueueDep, conversation_ids: list[int]) -> None:
    # The messages are stored: a lost signal only delays them until the reconciler runs.
    try:
        await queue.signal_many(conversation_ids)
    except Exception:
        log.exception("webhook.signal_failed", conversations=len(conversation_ids))
