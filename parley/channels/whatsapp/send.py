"""Sending through the WhatsApp Cloud API: a text reply, and a read receipt with typing.

One attempt per call: the delivery layer owns retries and scheduling, so every failure becomes
a `ChannelSendError` saying whether trying again can help and when. The access token goes
only into the Authorization header, never into an error message or a log line.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from parley.channels.base import SendResult
from parley.channels.graph_errors import classify_failure as classify_error
from parley.channels.graph_errors import json_or_none
from parley.channels.graph_path import segment
from parley.errors import ChannelSendError

__all__ = ["TEXT_LIMIT", "classify_error", "mark_read", "send_text"]

log = structlog.get_logger(__name__)

TEXT_LIMIT = 4096
"""Characters in one text message body."""


async def send_text(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    version: str,
    phone_number_id: str,
    token: str,
    to: str | None,
    recipient: str | None,
    text: str,
    reply_to: str | None = None,
    timeout: float,
) -> SendResult:
    """Send `text` to a phone number (`to`) or, when only that is known, a BSUID (`recipient`).

    Success means Meta accepted the message; delivery arrives later as a status.
    """
    body = text_body(to=to, recipient=recipient, text=text, reply_to=reply_to)
    answer = await _post(
        client, _messages_url(base_url, version, phone_number_id), token, body, timeout
    )
    return SendResult(channel_message_id=_sent_id(answer))


async def mark_read(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    version: str,
    phone_number_id: str,
    token: str,
    message_id: str,
    typing: bool = True,
    timeout: float,
) -> None:
    """Mark `message_id` read (blue ticks) and, with `typing`, show the typing indicator."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id,
    }
    if typing:
        body["typing_indicator"] = {"type": "text"}
    await _post(client, _messages_url(base_url, version, phone_number_id), token, body, timeout)


def text_body(
    *, to: str | None, recipient: str | None, text: str, reply_to: str | None
) -> dict[str, Any]:
    """The Graph request body for a text message; refuses what Graph would refuse anyway."""
    if not (to or recipient):
        raise ChannelSendError("no recipient: neither phone number nor user id", retryable=False)
    if not text.strip() or len(text) > TEXT_LIMIT:
        raise ChannelSendError(
            f"text must be 1..{TEXT_LIMIT} characters, got {len(text)}", retryable=False
        )
    # `to` wins when both are sent, so a BSUID is only worth sending without a phone number.
    address = {"to": to} if to else {"recipient": recipient}
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **address,
        "type": "text",
        "text": {"body": text, "preview_url": False},
    }
    if reply_to:
        body["context"] = {"message_id": reply_to}
    return body


def _messages_url(base_url: str, version: str, phone_number_id: str) -> str:
    return f"{base_url.rstrip('/')}/{version.strip('/')}/{segment(phone_number_id)}/messages"


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
    try:
        message_id = answer["messages"][0]["id"]
    except (KeyError, IndexError, TypeError):
        # Accepted all the same: retrying would send the text twice.
        log.warning("whatsapp.send_without_id")
        return None
    return str(message_id)
