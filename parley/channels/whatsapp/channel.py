"""WhatsApp Cloud API as a `Channel`: Meta-signed webhooks, Graph API sends, WhatsApp's own
formatting, 4,096 characters a message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from parley.channels.base import (
    META_WINDOW,
    Channel,
    Media,
    ParsedWebhook,
    SendFailure,
    SendResult,
    Target,
    TextLimit,
)
from parley.channels.graph_errors import status_error
from parley.channels.signature import hub_challenge, verify_request
from parley.channels.whatsapp import send
from parley.channels.whatsapp.format import markdown_to_whatsapp
from parley.channels.whatsapp.media import media_url as media_lookup
from parley.channels.whatsapp.models import CHANNEL
from parley.channels.whatsapp.parse import parse
from parley.config import Settings
from parley.errors import ChannelSendError

__all__ = ["WhatsAppChannel"]


class WhatsAppChannel(Channel):
    name = CHANNEL
    text_limit = TextLimit(send.TEXT_LIMIT)
    reply_window = META_WINDOW

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        verify_request(body, headers, settings.secret("meta_app_secret"))

    def handshake(self, params: Mapping[str, str], settings: Settings) -> str | None:
        return hub_challenge(params, settings.secret("meta_verify_token"))

    def parse(self, body: bytes) -> ParsedWebhook:
        return parse(body)

    def format(self, text: str) -> str:
        return markdown_to_whatsapp(text)

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
        return await send.send_text(
            client,
            base_url=settings.graph_api_base_url,
            version=settings.graph_api_version,
            phone_number_id=target.account_external_id,
            token=target.token,
            to=target.phone,
            # A business-scoped user id only addresses customers whose number is unknown.
            recipient=None if target.phone else target.user_id,
            text=text,
            reply_to=reply_to,
            timeout=timeout,
        )

    async def mark_read(
        self,
        client: httpx.AsyncClient,
        target: Target,
        message_id: str,
        *,
        settings: Settings,
        timeout: float,
    ) -> None:
        await send.mark_read(
            client,
            base_url=settings.graph_api_base_url,
            version=settings.graph_api_version,
            phone_number_id=target.account_external_id,
            token=target.token,
            message_id=message_id,
            typing=True,
            timeout=timeout,
        )

    async def media_url(
        self,
        client: httpx.AsyncClient,
        media: Media,
        *,
        token: str | None,
        settings: Settings,
        timeout: float,
    ) -> str | None:
        # The media id is asked each time: the webhook's own `url` (newer payloads) may have
        # expired by the time a turn reads it, the id lasts 7 days.
        if not media.media_id:
            return media.url
        return await media_lookup(
            client,
            base_url=settings.graph_api_base_url,
            version=settings.graph_api_version,
            media_id=media.media_id,
            token=token,
            timeout=timeout,
        )

    def classify_error(self, failure: SendFailure, *, token: str) -> ChannelSendError:
        return send.classify_error(failure, token)

    def classify_status(self, errors: Sequence[Mapping[str, Any]]) -> ChannelSendError:
        return status_error(errors)
