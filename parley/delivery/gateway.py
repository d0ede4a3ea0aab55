"""Sends through the channels with the account's credentials: the only code that knows which
channel module serves which account, and which token it uses."""

from __future__ import annotations

import httpx
import structlog

from parley.channels import whatsapp
from parley.channels.base import SendResult
from parley.config import Settings
from parley.errors import ChannelSendError
from parley.store.models import Account, Contact, Message

log = structlog.get_logger(__name__)

RECEIPT_TIMEOUT = 5.0
"""A read receipt is a courtesy: it must never hold up the answer for long."""


class ChannelGateway:
    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def send_text(
        self, *, account: Account, contact: Contact, text: str, reply_to: str | None
    ) -> SendResult:
        if account.channel == whatsapp.CHANNEL:
            return await whatsapp.send_text(
                self._client,
                base_url=self._settings.graph_api_base_url,
                version=self._settings.graph_api_version,
                phone_number_id=account.external_id,
                token=self._token(account),
                to=contact.phone,
                recipient=None if contact.phone else contact.user_id,
                text=text,
                reply_to=reply_to,
                timeout=self._settings.graph_timeout,
            )
        raise ChannelSendError(f"no sender for channel {account.channel}", retryable=False)

    async def mark_read(self, account: Account, message: Message) -> None:
        if account.channel != whatsapp.CHANNEL or not message.channel_message_id:
            return
        try:
            await whatsapp.mark_read(
                self._client,
                base_url=self._settings.graph_api_base_url,
                version=self._settings.graph_api_version,
                phone_number_id=account.external_id,
                token=self._token(account),
                message_id=message.channel_message_id,
                typing=True,
                timeout=RECEIPT_TIMEOUT,
            )
        except ChannelSendError as exc:
            log.warning("delivery.receipt_failed", reason=str(exc))

    def _token(self, account: Account) -> str:
        # Accounts without a token of their own use the environment's (CONTRACT.md).
        token = self._settings.secret(f"{account.channel}_access_token")
        if not token:
            raise ChannelSendError(
                f"no access token for {account.channel} account", retryable=False
            )
        return token
