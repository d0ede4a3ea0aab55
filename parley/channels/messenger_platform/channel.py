"""What Messenger and Instagram share as `Channel`s: Meta's handshake, the Messenger Platform
webhook, the Send API's text and sender actions, Graph's error codes. Each channel says where
its sends go and how long a message may be."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from parley.channels import markdown
from parley.channels.base import (
    META_WINDOW_WITH_HUMAN_AGENT,
    Channel,
    ParsedWebhook,
    SendFailure,
    SendResult,
    Target,
)
from parley.channels.graph_errors import status_error
from parley.channels.messenger_platform import send
from parley.channels.messenger_platform.parse import SYNTHETIC_ID_PREFIX, parse
from parley.channels.signature import hub_challenge
from parley.config import Settings
from parley.errors import ChannelSendError

__all__ = ["RECEIPT_ACTIONS", "MessengerPlatformChannel"]

RECEIPT_ACTIONS = ("mark_seen", "typing_on")
"""What a turn's start shows the customer: their message seen, then a reply being typed."""


class MessengerPlatformChannel(Channel):
    webhook_object: ClassVar[str]
    """The ``object`` of the channel's webhooks: ``page`` or ``instagram``."""
    threads_replies: ClassVar[bool] = False
    """Whether a reply quotes the customer's message (the Send API's ``reply_to``)."""
    reply_window = META_WINDOW_WITH_HUMAN_AGENT

    @abstractmethod
    def messages_url(self, target: Target, settings: Settings) -> str:
        """Where the account's sends and sender actions go."""

    def handshake(self, params: Mapping[str, str], settings: Settings) -> str | None:
        return hub_challenge(params, settings.secret("meta_verify_token"))

    def parse(self, body: bytes) -> ParsedWebhook:
        return parse(body, channel=self.name, webhook_object=self.webhook_object)

    def format(self, text: str) -> str:
        return markdown.render(text, markdown.PLAIN)  # neither app renders Markdown

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
            url=self.messages_url(target, settings),
            token=target.token,
            recipient=target.user_id,
            text=text,
            limit=self.text_limit,
            tag=target.tag,
            reply_to=self._quotable(reply_to),
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
        # The Send API marks the whole thread seen, so `message_id` names nothing here.
        url = self.messages_url(target, settings)
        for action in RECEIPT_ACTIONS:
            await send.send_action(
                client,
                url=url,
                token=target.token,
                recipient=target.user_id,
                action=action,
                timeout=timeout,
            )

    def classify_error(self, failure: SendFailure, *, token: str) -> ChannelSendError:
        return send.classify_error(failure, token)

    def classify_status(self, errors: Sequence[Mapping[str, Any]]) -> ChannelSendError:
        return status_error(errors)

    def _quotable(self, reply_to: str | None) -> str | None:
        """The message id to quote, if the channel threads replies and Meta knows the id."""
        if not self.threads_replies or not reply_to or reply_to.startswith(SYNTHETIC_ID_PREFIX):
            return None
        return reply_to
