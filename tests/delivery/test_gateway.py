"""The gateway hands the channel what delivery decided: the message tag, the account's rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from parley.channels import registry
from parley.channels.base import (
    META_WINDOW_WITH_HUMAN_AGENT,
    Channel,
    ParsedWebhook,
    SendFailure,
    SendResult,
    Target,
    TextLimit,
)
from parley.config import Settings
from parley.delivery.gateway import ChannelGateway
from parley.delivery.window import HUMAN_AGENT
from parley.errors import ChannelSendError
from parley.store.models import Account, Contact

SETTINGS = Settings(_env_file=None, whatsapp_access_token="wa-token")  # type: ignore[call-arg]


class Recording(Channel):
    name = "recording"
    text_limit = TextLimit(2000)
    reply_window = META_WINDOW_WITH_HUMAN_AGENT

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        return None

    def handshake(self, params: Mapping[str, str], settings: Settings) -> str | None:
        return None

    def parse(self, body: bytes) -> ParsedWebhook:
        return ParsedWebhook()

    async def send_text(
        self, client: httpx.AsyncClient, target: Target, text: str, **_: Any
    ) -> SendResult:
        self.targets.append(target)
        return SendResult("mid.1")

    async def mark_read(
        self, client: httpx.AsyncClient, target: Target, message_id: str, **_: Any
    ) -> None:
        return None

    def classify_error(self, failure: SendFailure, *, token: str) -> ChannelSendError:
        return ChannelSendError("no", retryable=False)


async def test_the_tag_reaches_the_channels_target() -> None:
    channels = registry.Registry()
    channel = channels.register(Recording())
    gateway = ChannelGateway(httpx.AsyncClient(), SETTINGS, channels)
    account = Account(id=1, channel="recording", external_id="page-1", settings={})
    contact = Contact(phone=None, user_id="psid-1")

    # The recording channel has no access-token setting: give the gateway one to find.
    async def token(_account: Account) -> str:
        return "page-token"

    gateway._token = token  # type: ignore[method-assign]
    await gateway.send_text(
        account=account, contact=contact, text="hi", reply_to=None, tag=HUMAN_AGENT
    )
    await gateway.send_text(account=account, contact=contact, text="hi", reply_to=None)
    assert [t.tag for t in channel.targets] == [HUMAN_AGENT, None]
    assert gateway.reply_window(account) == META_WINDOW_WITH_HUMAN_AGENT


def test_the_send_rate_is_the_channels_setting_unless_the_account_has_its_own() -> None:
    settings = Settings(_env_file=None, parley_whatsapp_send_rate=25)  # type: ignore[call-arg]
    gateway = ChannelGateway(httpx.AsyncClient(), settings)
    assert gateway.send_rate(Account(channel="whatsapp", external_id="1", settings={})) == 25
    own = Account(channel="whatsapp", external_id="1", settings={}, send_rate=1000)
    assert gateway.send_rate(own) == 1000
    unlimited = Account(channel="whatsapp", external_id="1", settings={}, send_rate=0)
    assert gateway.send_rate(unlimited) is None
    assert gateway.send_rate(Account(channel="echochat", external_id="1", settings={})) is None
    off = Settings(_env_file=None, parley_whatsapp_send_rate=0)  # type: ignore[call-arg]
    assert (
        ChannelGateway(httpx.AsyncClient(), off).send_rate(
            Account(channel="whatsapp", external_id="1", settings={})
        )
        is None
    )
