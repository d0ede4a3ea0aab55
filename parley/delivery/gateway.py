"""Sends through the channels with the account's credentials, and fetches the files customers
sent with them: the only code that turns the store's rows into what a channel calls with, and
knows which token an account uses."""

from __future__ import annotations

import httpx
import structlog

from parley.channels import registry
from parley.channels.base import Channel, Downloaded, Media, SendResult, Target
from parley.channels.download import fetch_media
from parley.config import Settings
from parley.errors import ChannelSendError, MediaUnavailable, UnknownChannel
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

    async def mark_read(self, account: Account, message: Message) -> None:
        channel = self._channel(account)
        if channel is None or not message.channel_message_id:
            return
        try:
            await channel.mark_read(
                self._client,
                self._target(account, None),
                message.channel_message_id,
                settings=self._settings,
                timeout=RECEIPT_TIMEOUT,
            )
        except ChannelSendError as exc:
            log.warning("delivery.receipt_failed", reason=str(exc))

    async def fetch_media(self, account: Account, media: Media) -> Downloaded:
        """A file a customer of `account` sent, downloaded with the account's token.

        Raises:
            MediaUnavailable: refused or not fetched (`channels.download`).
        """
        channel = self._channel(account)
        if channel is None:
            raise MediaUnavailable("unavailable", f"no channel {account.channel}")
        try:
            token: str | None = self._token(account)
        except ChannelSendError:
            # An attachment URL is signed and may still be fetched; a media id needs a token,
            # and the channel says so.
            token = None
        return await fetch_media(channel, self._client, media, token=token, settings=self._settings)

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
