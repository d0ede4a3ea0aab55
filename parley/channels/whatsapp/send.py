"""Sending through the WhatsApp Cloud API: a text reply, and a read receipt with typing.

One attempt per call: the delivery layer owns retries and scheduling, so every failure becomes
a `ChannelSendError` saying whether trying again can help and when. The access token goes
only into the Authorization header, never into an error message or a log line.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from parley.channels.base import SendFailure, SendResult
from parley.channels.graph_errors import READABLE, graph_error
from parley.errors import ChannelSendError, FailureKind

__all__ = ["TEXT_LIMIT", "classify_error", "mark_read", "send_text"]

log = structlog.get_logger(__name__)

TEXT_LIMIT = 4096
"""Characters in one text message body."""

MAX_RETRY_AFTER = 60.0
"""Seconds: a longer Retry-After would park a conversation; the delivery layer backs off."""


_RETRYABLE_TRANSPORT = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
_MAX_DETAIL = 300


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
    return f"{base_url.rstrip('/')}/{version.strip('/')}/{phone_number_id}/messages"


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
    return _json_or_none(response)


def classify_error(failure: SendFailure, token: str) -> ChannelSendError:
    """A Graph error answer or a failed transport as a `ChannelSendError` of the kind its code
    means (`graph_errors.classify`): throttling, 5xx and network trouble are retryable (after
    Retry-After, within bounds); the rest is final."""
    if isinstance(failure, httpx.Response):
        return _http_error(failure, token)
    return _transport_error(failure)


def _transport_error(exc: Exception) -> ChannelSendError:
    what = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport error"
    retryable = isinstance(exc, _RETRYABLE_TRANSPORT)
    kind = FailureKind.TRANSIENT if retryable else FailureKind.REJECTED
    return ChannelSendError(
        f"{READABLE[kind]} (graph {what}: {type(exc).__name__})", retryable=retryable, kind=kind
    )


def _http_error(response: httpx.Response, token: str) -> ChannelSendError:
    error = _graph_error(response)
    detail = _redact(str(error.get("message") or response.reason_phrase or "error"), token)
    retry_after = _retry_after(response.headers.get("retry-after"))
    return graph_error(error, status=response.status_code, detail=detail, retry_after=retry_after)


def _graph_error(response: httpx.Response) -> dict[str, Any]:
    """Graph's ``{"error": {code, message, …}}``, or nothing when a proxy answered instead."""
    answer = _json_or_none(response)
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else {}


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _redact(detail: str, token: str) -> str:
    # Graph may quote a malformed token back; it must not reach a stored error.
    if token:
        detail = detail.replace(token, "[token]")
    return detail[:_MAX_DETAIL]


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), within 0..MAX_RETRY_AFTER."""
    if not value:
        return None
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _sent_id(answer: Any) -> str | None:
    try:
        message_id = answer["messages"][0]["id"]
    except (KeyError, IndexError, TypeError):
        # Accepted all the same: retrying would send the text twice.
        log.warning("whatsapp.send_without_id")
        return None
    return str(message_id)
