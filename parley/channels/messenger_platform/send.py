"""Sending through Meta's Send API (Messenger, Instagram with either login): a text message, and
sender actions (seen, typing).

One attempt per call: the delivery layer owns retries, so every failure becomes a
`ChannelSendError` saying whether trying again can help and when. The access token goes only
into the Authorization header, never into an error message or a log line.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from parley.channels.base import SendResult, TextLimit
from parley.channels.graph_errors import classify_failure as classify_error
from parley.channels.graph_errors import json_or_none
from parley.channels.graph_path import segment
from parley.errors import ChannelSendError

__all__ = ["classify_error", "messages_url", "send_action", "send_text"]

log = structlog.get_logger(__name__)


def messages_url(base_url: str, version: str, node: str) -> str:
    """``{base}/{version}/{node}/messages``: a page, an Instagram account, or ``me``."""
    return f"{base_url.rstrip('/')}/{version.strip('/')}/{segment(node)}/messages"


async def send_text(
    client: httpx.AsyncClient,
    *,
    url: str,
    token: str,
    recipient: str | None,
    text: str,
    limit: TextLimit,
    tag: str | None = None,
    reply_to: str | None = None,
    timeout: float,
) -> SendResult:
    """Send `text` to the customer `recipient` (their PSID or IGSID).

    Args:
        tag: a message tag (``HUMAN_AGENT``) for a send outside the 24-hour window; without one
            the message is a ``RESPONSE``.
        reply_to: a message id of the customer's to quote (Instagram only).
    """
    body = text_body(recipient=recipient, text=text, limit=limit, tag=tag, reply_to=reply_to)
    answer = await _post(client, url, token, body, timeout)
    return SendResult(channel_message_id=_sent_id(answer))


async def send_action(
    client: httpx.AsyncClient,
    *,
    url: str,
    token: str,
    recipient: str | None,
    action: str,
    timeout: float,
) -> None:
    """One sender action (``mark_seen``, ``typing_on``, ``typing_off``) in the customer's
    thread."""
    if not recipient:
        raise ChannelSendError("no recipient for a sender action", retryable=False)
    body = {"recipient": {"id": recipient}, "sender_action": action}
    await _post(client, url, token, body, timeout)


def text_body(
    *, recipient: str | None, text: str, limit: TextLimit, tag: str | None, reply_to: str | None
) -> dict[str, Any]:
    """The Send API body for a text message; refuses what Graph would refuse anyway."""
    if not recipient:
        raise ChannelSendError("no recipient: the customer has no user id", retryable=False)
    size = limit.measure.size(text)
    if not text.strip() or size > limit.size:
        raise ChannelSendError(
            f"text must be 1..{limit.size} {limit.measure.unit}, got {size}", retryable=False
        )
    body: dict[str, Any] = {
        "recipient": {"id": recipient},
        "messaging_type": "MESSAGE_TAG" if tag else "RESPONSE",
        "message": {"text": text},
    }
    if tag:
        body["tag"] = tag
    if reply_to:
        body["reply_to"] = {"mid": reply_to}
    return body


async def _post(
    client: httpx.AsyncClient, url: str, token: str, body: dict[str, Any], timeout: float
) -> Any:
    try:
        response = await client.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise classify_error(exc, token) from exc
    if not response.is_success:
        raise classify_error(response, token)
    return json_or_none(response)


def _sent_id(answer: Any) -> str | None:
    message_id = answer.get("message_id") if isinstance(answer, dict) else None
    if not message_id:
        # Accepted all the same: retrying would send the text twice.
        log.warning("messenger_platform.send_without_id")
        return None
    return str(message_id)
