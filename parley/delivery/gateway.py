"""Sends through the channels with the account's credentials, and fetches the files customers
sent with them: the only code that turns the store's rows into what a channel calls with, and
knows which token an account uses: its own when it has one, else the environment's
`<CHANNEL>_ACCESS_TOKEN`, and none for an account that must not be answered (see
`store.queries.account_directory`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx
import structlog

from parley.channels import registry
from parley.channels.base import Channel, Downloaded, Media, ReplyWindow, SendResult, Target
from parley.channels.download import fetch_media
from parley.config import Settings
from parley.errors import (
    ChannelSendError,
    MediaUnavailable,
    SecretsDisabled,
    SecretUnreadable,
    UnknownChannel,
)
from parley.store.models import Account, Contact, Message
from parley.store.queries.account_directory import AccountDirectory

log = structlog.get_logger(__name__)

RECEIPT_TIMEOUT = 5.0
"""A read receipt is a courtesy: it must never hold up the answer for long."""


class ChannelGateway:
    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        channels: registry.Registry = registry.DEFAULT,
        accounts: AccountDirectory | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._channels = channels
        self._accounts = accounts

    async def send_text(
        self,
        *,
        account: Account,
        contact: Contact,
        text: str,
        reply_to: str | None,
        tag: str | None = None,
    ) -> SendResult:
        channel = self._channel(account)
        if channel is None:
            raise ChannelSendError(f"no sender for channel {account.channel}", retryable=False)
        target = await self._target(account, contact)
        return await channel.send_text(
            self._client,
            replace(target, tag=tag) if tag else target,
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
                await self._target(account, contact),
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
            token: str | None = await self._token(account)
        except ChannelSendError:
            # An attachment URL is signed and may still be fetched; a media id needs a token,
            # and the channel says so.
            token = None
        return await fetch_media(channel, self._client, media, token=token, settings=self._settings)

    def reply_window(self, account: Account) -> ReplyWindow | None:
        """The account's channel's window for replies; None when it has none (or is unknown:
        the send then fails with its own reason)."""
        channel = self._channel(account)
        return channel.reply_window if channel is not None else None

    def classify_status(
        self, account: Account, errors: Sequence[Mapping[str, Any]]
    ) -> ChannelSendError:
        """A failed status report's errors, as the account's channel reads them."""
        channel = self._channel(account)
        if channel is None:
            return ChannelSendError(f"no channel {account.channel}", retryable=False)
        return channel.classify_status(errors)

    def send_rate(self, account: Account) -> float | None:
        """Messages per second the account may send: its own `send_rate` setting, else
        `PARLEY_<CHANNEL>_SEND_RATE`; None for no limit."""
        own = account.send_rate
        if own is not None:
            return float(own) if own > 0 else None
        rate = getattr(self._settings, f"parley_{account.channel}_send_rate", None)
        return float(rate) if isinstance(rate, int | float) and rate > 0 else None

    def _channel(self, account: Account) -> Channel | None:
        try:
            return self._channels.get(account.channel)
        except UnknownChannel:
            return None

    async def _target(self, account: Account, contact: Contact | None) -> Target:
        return Target(
            account_external_id=account.external_id,
            phone=contact.phone if contact else None,
            user_id=contact.user_id if contact else None,
            token=await self._token(account),
            account_settings=account.settings or {},
        )

    async def _token(self, account: Account) -> str:
        if self._accounts is not None:
            refusal = await self._accounts.refusal(account)
            if refusal is not None:
                raise ChannelSendError(f"not sent: {refusal}", retryable=False)
            own = self._own_token(self._accounts, account)
            if own is not None:
                return own
        # Accounts without a token of their own use the environment's, <CHANNEL>_ACCESS_TOKEN;
        # a channel with no such setting has no token until it gets one.
        name = f"{account.channel}_access_token"
        token = self._settings.secret(name) if hasattr(self._settings, name) else None
        if not token:
            raise ChannelSendError(
                f"no access token for {account.channel} account", retryable=False
            )
        return token

    @staticmethod
    def _own_token(accounts: AccountDirectory, account: Account) -> str | None:
        try:
            return accounts.access_token(account)
        except (SecretsDisabled, SecretUnreadable) as exc:
            # Never the environment's token instead: that would answer as another business.
            log.error("delivery.token_unreadable", account_id=account.id, reason=str(exc))
            raise ChannelSendError(
                "the account's access token cannot be decrypted (PARLEY_SECRET_KEY changed?)",
                retryable=False,
            ) from exc
