"""Instagram as a `Channel`: webhooks of the ``instagram`` object, 1,000 bytes of UTF-8 a
message, replies quoting the customer's message, and two ways to send.

- **Instagram Login** (the default): sends go to ``{INSTAGRAM_API_BASE_URL}/{version}/{account
  id}/messages`` with an Instagram user token; its webhooks are signed with the Instagram app
  secret.
- **Facebook page** (``INSTAGRAM_SETUP=facebook_page``, or an account's ``instagram_setup``):
  sends go to ``{GRAPH_API_BASE_URL}/{version}/{page id}/messages`` with the page's token; its
  webhooks are signed with the Meta app secret.

Both setups deliver the same webhooks to one URL, so a body is accepted when it verifies with
either secret.
"""

from __future__ import annotations

from collections.abc import Mapping

from parley.channels.base import Target, TextLimit
from parley.channels.messenger_platform import MessengerPlatformChannel
from parley.channels.messenger_platform.send import messages_url
from parley.channels.signature import SIGNATURE_HEADER, verify_signature
from parley.channels.text import UTF8_BYTES
from parley.config import Settings
from parley.errors import BadSignature, WebhookNotConfigured

__all__ = ["CHANNEL", "FACEBOOK_PAGE", "INSTAGRAM_LOGIN", "TEXT_LIMIT", "InstagramChannel"]

CHANNEL = "instagram"
TEXT_LIMIT = TextLimit(1000, UTF8_BYTES)
"""Bytes of UTF-8 in one text message (Meta's pages also say "1000 characters"; the bytes are
the stricter reading)."""
INSTAGRAM_LOGIN = "instagram_login"
FACEBOOK_PAGE = "facebook_page"
PAGE_OF_TOKEN = "me"
"""The Send API's name for the page a page token belongs to."""


class InstagramChannel(MessengerPlatformChannel):
    name = CHANNEL
    text_limit = TEXT_LIMIT
    webhook_object = "instagram"
    threads_replies = True
    secret_settings = ("instagram_app_secret", "meta_app_secret")

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        secrets = [  # each once, in order: the Instagram app's first
            secret for secret in (settings.secret(name) for name in self.secret_settings) if secret
        ]
        if not secrets:
            raise WebhookNotConfigured("no app secret to verify Instagram webhooks with")
        failure: BadSignature | None = None
        for secret in secrets:
            try:
                verify_signature(body, headers.get(SIGNATURE_HEADER), secret)
                return
            except BadSignature as exc:
                failure = exc
        assert failure is not None
        raise failure

    def messages_url(self, target: Target, settings: Settings) -> str:
        own = target.account_settings
        setup = own.get("instagram_setup") or settings.instagram_setup
        version = settings.graph_api_version
        if setup == FACEBOOK_PAGE:
            page = own.get("page_id") or settings.instagram_page_id or PAGE_OF_TOKEN
            return messages_url(settings.graph_api_base_url, version, str(page))
        return messages_url(settings.instagram_api_base_url, version, target.account_external_id)
