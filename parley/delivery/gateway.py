"""Sends through the channels with the account's credentials: the only code that turns the
store's rows into what a channel sends with, and knows which token an account uses."""

from __future__ import annotations

import httpx
import structlog

from parley.channels import registry
from parley.channels.base import Channel, SendResult, Target
from parley.config import Settings
from parley.errors import ChannelSendError, UnknownChannel
from parley.store.models import Account, Contact, Message

log = structlog.get_logger(__name__)

RECEIPT_TIMEOUT = 5.0
"""A read receipt is a courtesy: it must never hold up the answer for long."""


class ChannelGateway:
    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        channels: registry.Registry = registry.DEFAULT,
    ) -> None:
        self._client = client
        self._settings = settings
        self._channels = channels

    async def send_text(
        self, *, account: Account, contact: Contact, text: str, reply_to: str | None
    ) -> SendResult:
        channel = self._channel(account)
        if channel is None:
            raise ChannelSendError(f"no sender for channel {account.channel}", retryable=False)
        return await channel.send_text(
            self._client,
            self._target(account, contact),
            text,
            reply_to=reply_to,
            settings=self._settings,
            timeout=self._settings.graph_timeout,
        )

    async def mark_read(
        self, account: Account, message: Message, contact: Contact | None = None
    ) -> None:
        """Show `contact` their `message` read and a reply being typed (best effort): WhatsApp
        names the message, Messenger and Instagram the customer."""
        channel = self._channel(account)
        if channel is None or not message.channel_message_id:
            return
        try:
            await channel.mark_read(
                self._client,
                self._target(account, contact),
                message.channel_message_id,
                settings=self._settings,
                timeout=RECEIPT_TIMEOUT,
            )
        except ChannelSendError as exc:
            log.warning("delivery.receipt_failed", reason=str(exc))

    def _channel(self, account: Account) -> Channel | None:
        try:
            return self._channels.get(account.channel)
        except UnknownChannel:
            return None

    def _target(self, account: Account, contact: Contact | None) -> Target:
        return Target(
            account_external_id=account.external_id,
            phone=contact.phone if contact else None,
            user_id=contact.user_id if contact else None,
            token=self._token(account),
            account_settings=account.settings or {},
        )

    def _token(self, account: Account) -> str:
        # Accounts without a token of their own use the environment's, <CHANNEL>_ACCESS_TOKEN;
        # a channel with no such setting has no token until it gets one.
        name = f"{account.channel}_access_token"
        token = self._settings.secret(name) if hasattr(self._settings, name) else None
        if not token:
            raise ChannelSendError(
                f"no access token for {account.channel} account", retryable=False
            )
        return token
