"""EchoChat: a made-up channel that exists only in tests, to show that one module and a
registration make a channel. Its webhooks are Meta-signed JSON of its own shape; it sends
through the Graph API's Messenger-style send, 1,000 UTF-8 bytes a message."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from parley.channels.base import (
    Channel,
    InboundMessage,
    Media,
    ParsedWebhook,
    SendFailure,
    SendResult,
    StatusUpdate,
    Target,
    TextLimit,
)
from parley.channels.signature import hub_challenge, verify_request
from parley.channels.text import UTF8_BYTES
from parley.config import Settings
from parley.errors import BadPayload, ChannelSendError

NAME = "echochat"


class EchoChat(Channel):
    name = NAME
    text_limit = TextLimit(1000, UTF8_BYTES)

    def __init__(self) -> None:
        self.receipts: list[str] = []
        # Parley marks messages read in its own server thread; a test waits on this.
        self.receipt_arrived = threading.Condition()

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        verify_request(body, headers, settings.secret("meta_app_secret"))

    def handshake(self, params: Mapping[str, str], settings: Settings) -> str | None:
        return hub_challenge(params, settings.secret("meta_verify_token"))

    def parse(self, body: bytes) -> ParsedWebhook:
        try:
            data = json.loads(body)
            return ParsedWebhook(
                messages=[_message(data["account"], item) for item in data.get("messages", [])],
                statuses=[_status(data["account"], item) for item in data.get("statuses", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadPayload("not an echochat body") from exc

    def format(self, text: str) -> str:
        return text.replace("**", "")  # no bold on EchoChat

    async def send_text(
        self,
        client: httpx.AsyncClient,
        target: Target,
        text: str,
        *,
        reply_to: str | None,
        settings: Settings,
        timeout: float,
    ) -> SendResult:
        base = f"{settings.graph_api_base_url}/{settings.graph_api_version}"
        try:
            response = await client.post(
                f"{base}/{target.account_external_id}/messages",
                json={"recipient": {"id": target.user_id}, "message": {"text": text}},
                headers={"Authorization": f"Bearer {target.token}"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise self.classify_error(exc, token=target.token) from exc
        if not response.is_success:
            raise self.classify_error(response, token=target.token)
        return SendResult(response.json()["message_id"])

    async def mark_read(
        self,
        client: httpx.AsyncClient,
        target: Target,
        message_id: str,
        *,
        settings: Settings,
        timeout: float,
    ) -> None:
        with self.receipt_arrived:  # EchoChat has no read ticks; tests read these
            self.receipts.append(message_id)
            self.receipt_arrived.notify_all()

    def classify_error(self, failure: SendFailure, *, token: str) -> ChannelSendError:
        if isinstance(failure, httpx.Response):
            status = failure.status_code
            return ChannelSendError(f"echochat {status}", retryable=status >= 500, status=status)
        return ChannelSendError(f"echochat {type(failure).__name__}", retryable=True)


def _message(account: str, item: dict[str, Any]) -> InboundMessage:
    # Attachments as Instagram and Messenger send them: a type and a CDN URL, no media id.
    media = tuple(Media(a["type"], url=a["url"]) for a in item.get("attachments", []))
    return InboundMessage(
        channel=NAME,
        account_external_id=account,
        channel_message_id=item["id"],
        user_id=item["from"],
        phone=None,
        contact_name=item.get("name"),
        contact_username=None,
        kind=media[0].kind if media else "text",
        text=item.get("text"),
        needs_reply=True,
        timestamp=datetime.fromtimestamp(item["ts"], UTC),
        payload=item,
        media=media,
    )


def _status(account: str, item: dict[str, Any]) -> StatusUpdate:
    timestamp = datetime.fromtimestamp(item["ts"], UTC)
    return StatusUpdate(NAME, account, item["id"], item["status"], timestamp)
