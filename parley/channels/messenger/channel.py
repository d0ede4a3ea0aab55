"""Messenger as a `Channel`: webhooks of the ``page`` object signed with the Meta app secret,
sends to the page through the Graph API with its page token, 2,000 characters a message."""

from __future__ import annotations

from collections.abc import Mapping

from parley.channels.base import Target, TextLimit
from parley.channels.messenger_platform import MessengerPlatformChannel
from parley.channels.messenger_platform.send import messages_url
from parley.channels.signature import verify_request
from parley.config import Settings

__all__ = ["CHANNEL", "TEXT_LIMIT", "MessengerChannel"]

CHANNEL = "messenger"
TEXT_LIMIT = TextLimit(2000)
"""Characters of one text message (the Send API's limit)."""


class MessengerChannel(MessengerPlatformChannel):
    name = CHANNEL
    text_limit = TEXT_LIMIT
    webhook_object = "page"

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        verify_request(body, headers, settings.secret("meta_app_secret"))

    def messages_url(self, target: Target, settings: Settings) -> str:
        # The page is the webhook entry's id, which the account is stored under.
        return messages_url(
            settings.graph_api_base_url, settings.graph_api_version, target.account_external_id
        )
