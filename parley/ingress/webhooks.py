"""Meta's webhooks: the handshake, then signed POSTs stored before they are acknowledged."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from parley.channels import whatsapp
from parley.channels.signature import verify_signature
from parley.deps import QueueDep, SessionDep, SettingsDep
from parley.errors import BadPayload, BadSignature
from parley.observability.metrics import WEBHOOK_MESSAGES
from parley.store.queries.inbound import apply_statuses, record_inbound

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

SIGNATURE_HEADER = "x-hub-signature-256"


@router.get("/whatsapp", response_class=PlainTextResponse)
async def whatsapp_handshake(
    settings: SettingsDep,
    mode: Annotated[str | None, Query(alias="hub.mode")] = None,
    token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge")] = None,
) -> Response:
    """Meta's verification: echo the challenge when the verify token is ours."""
    expected = settings.secret("meta_verify_token")
    if (
        not expected
        or mode != "subscribe"
        or token is None
        or challenge is None
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        log.warning("webhook.handshake_refused", channel="whatsapp")
        return PlainTextResponse("verification failed", status_code=403)
    return PlainTextResponse(challenge)


@router.post("/whatsapp")
async def whatsapp_receive(
    request: Request, session: SessionDep, queue: QueueDep, settings: SettingsDep
) -> Response:
    body = await request.body()
    secret = settings.secret("meta_app_secret")
    if not secret:
        log.error("webhook.no_app_secret", channel="whatsapp")
        return PlainTextResponse("webhook signing is not configured", status_code=401)
    try:
        verify_signature(body, request.headers.get(SIGNATURE_HEADER), secret)
    except BadSignature:
        log.warning("webhook.bad_signature", channel="whatsapp")
        return PlainTextResponse("invalid signature", status_code=401)
    try:
        parsed = whatsapp.parse(body)
    except BadPayload as exc:
        log.warning("webhook.bad_payload", channel="whatsapp", reason=str(exc))
        return PlainTextResponse("invalid payload", status_code=400)

    waiting = await record_inbound(
        session, messages=parsed.messages, correlation_id=request.state.correlation_id
    )
    moved = await apply_statuses(session, statuses=parsed.statuses)
    await session.commit()  # durable before Meta sees 200
    await _signal(queue, waiting)
    WEBHOOK_MESSAGES.labels("whatsapp").inc(len(parsed.messages))
    log.info(
        "webhook.accepted",
        channel="whatsapp",
        messages=len(parsed.messages),
        statuses=len(parsed.statuses),
        statuses_applied=moved,
        skipped=parsed.skipped,
    )
    return Response(status_code=200)


async def _signal(queue: QueueDep, conversation_ids: list[int]) -> None:
    # The messages are stored: a lost signal only delays them until the reconciler runs.
    try:
        await queue.signal_many(conversation_ids)
    except Exception:
        log.exception("webhook.signal_failed", conversations=len(conversation_ids))
