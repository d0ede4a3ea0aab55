"""Messenger's and Instagram's sends, sender actions, signatures and error classes, against the
Graph simulators over real HTTP: graph.facebook.com and graph.instagram.com, one server each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parley.channels import instagram, messenger
from parley.channels.base import Target
from parley.channels.signature import sign
from parley.config import Settings
from parley.errors import BadSignature, ChannelSendError, WebhookNotConfigured
from parley.testing import GraphSimulator, ServerThread
from tests.factories import APP_SECRET, INSTAGRAM_APP_SECRET, VERIFY_TOKEN

PAGE = "109029271668032"
IG_ACCOUNT = "17841400538867190"
PSID = "4714860478621687"
IGSID = "1129842642640637"
TOKEN = "EAAG-page-token"


@pytest.fixture
def meta_settings(
    graph_server: tuple[GraphSimulator, ServerThread],
    instagram_server: tuple[GraphSimulator, ServerThread],
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        graph_api_base_url=graph_server[1].url,
        instagram_api_base_url=instagram_server[1].url,
        meta_app_secret=SecretStr(APP_SECRET),
        instagram_app_secret=SecretStr(INSTAGRAM_APP_SECRET),
        meta_verify_token=SecretStr(VERIFY_TOKEN),
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def target(account: str, user: str | None, **fields: Any) -> Target:
    return Target(account_external_id=account, phone=None, user_id=user, token=TOKEN, **fields)


async def send(
    channel: Any, client: httpx.AsyncClient, settings: Settings, to: Target, text: str, **kw: Any
) -> Any:
    return await channel.send_text(
        client, to, text, reply_to=kw.pop("reply_to", None), settings=settings, timeout=5, **kw
    )


# --- sends ----------------------------------------------------------------------------------------


async def test_messenger_sends_to_the_page_as_a_response(
    client: httpx.AsyncClient, meta_settings: Settings, graph_sim: GraphSimulator
) -> None:
    result = await send(
        messenger.channel, client, meta_settings, target(PAGE, PSID), "Hi!", reply_to="m_in"
    )

    (request,) = graph_sim.sends
    assert request.path == f"/v26.0/{PAGE}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    # Messenger does not quote: no reply_to.
    assert request.json == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hi!"},
    }
    assert result.channel_message_id and result.channel_message_id.startswith("mid.")


async def test_a_tagged_send_is_a_message_tag(
    client: httpx.AsyncClient, meta_settings: Settings, graph_sim: GraphSimulator
) -> None:
    await send(
        messenger.channel, client, meta_settings, target(PAGE, PSID, tag="HUMAN_AGENT"), "Later"
    )
    (request,) = graph_sim.sends
    assert request.json is not None
    assert (request.json["messaging_type"], request.json["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_instagram_login_sends_to_graph_instagram_quoting_the_customer(
    client: httpx.AsyncClient,
    meta_settings: Settings,
    graph_sim: GraphSimulator,
    instagram_sim: GraphSimulator,
) -> None:
    await send(
        instagram.channel, client, meta_settings, target(IG_ACCOUNT, IGSID), "Olá", reply_to="aWdf"
    )
    (request,) = instagram_sim.sends
    assert request.path == f"/v26.0/{IG_ACCOUNT}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json is not None
    assert request.json["reply_to"] == {"mid": "aWdf"}
    assert request.json["recipient"] == {"id": IGSID}
    assert graph_sim.requests == []


async def test_a_made_up_id_is_never_quoted(
    client: httpx.AsyncClient, meta_settings: Settings, instagram_sim: GraphSimulator
) -> None:
    to = target(IG_ACCOUNT, IGSID)
    await send(instagram.channel, client, meta_settings, to, "ok", reply_to="parley:postback:x")
    assert instagram_sim.sends[0].json is not None
    assert "reply_to" not in instagram_sim.sends[0].json


@pytest.mark.parametrize(
    ("own", "env", "path"),
    [
        ({}, {"instagram_setup": "facebook_page"}, "/v26.0/me/messages"),
        ({}, {"instagram_setup": "facebook_page", "instagram_page_id": PAGE}, f"/v26.0/{PAGE}"),
        ({"instagram_setup": "facebook_page", "page_id": "777"}, {}, "/v26.0/777/messages"),
    ],
)
async def test_a_page_linked_instagram_account_sends_through_its_page(
    client: httpx.AsyncClient,
    meta_settings: Settings,
    graph_sim: GraphSimulator,
    instagram_sim: GraphSimulator,
    own: dict[str, str],
    env: dict[str, str],
    path: str,
) -> None:
    settings = meta_settings.model_copy(update=env)
    to = target(IG_ACCOUNT, IGSID, account_settings=own)
    await send(instagram.channel, client, settings, to, "Hello from the page")
    (request,) = graph_sim.sends
    assert request.path.startswith(path)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert instagram_sim.requests == []


async def test_text_over_the_limit_or_without_a_customer_is_refused_before_sending(
    client: httpx.AsyncClient, meta_settings: Settings, instagram_sim: GraphSimulator
) -> None:
    fits = "é" * 500  # 1,000 bytes
    await send(instagram.channel, client, meta_settings, target(IG_ACCOUNT, IGSID), fits)
    for text, to in [
        (fits + "e", target(IG_ACCOUNT, IGSID)),
        ("  ", target(IG_ACCOUNT, IGSID)),
        ("hi", target(IG_ACCOUNT, None)),
    ]:
        with pytest.raises(ChannelSendError) as caught:
            await send(instagram.channel, client, meta_settings, to, text)
        assert not caught.value.retryable
    assert len(instagram_sim.requests) == 1
    assert messenger.channel.text_limit.size == 2000
    assert messenger.channel.text_limit.measure.unit == "characters"


# --- sender actions -------------------------------------------------------------------------------


async def test_mark_read_marks_the_thread_seen_then_shows_typing(
    client: httpx.AsyncClient, meta_settings: Settings, graph_sim: GraphSimulator
) -> None:
    await messenger.channel.mark_read(
        client, target(PAGE, PSID), "m_in", settings=meta_settings, timeout=5
    )
    assert [r.json for r in graph_sim.receipts] == [
        {"recipient": {"id": PSID}, "sender_action": "mark_seen"},
        {"recipient": {"id": PSID}, "sender_action": "typing_on"},
    ]
    assert graph_sim.sends == []
    with pytest.raises(ChannelSendError):
        await messenger.channel.mark_read(
            client, target(PAGE, None), "m_in", settings=meta_settings, timeout=5
        )


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fields", "retryable", "words"),
    [
        (400, {"code": 10, "error_subcode": 2018278}, False, "outside the customer-service window"),
        (
            400,
            {"code": 10, "message": "(#10) Message sent outside of allowed window."},
            False,
            "outside the customer-service window",
        ),
        (400, {"code": 551, "message": "This person isn't available right now."}, False, "551"),
        (401, {"code": 190}, False, "access token is expired"),
        (400, {"code": 100, "message": "(#100) Invalid parameter"}, False, "100"),
        (400, {"code": 4, "message": "(#4) Application request limit reached"}, True, "4"),
        (500, {"code": 2}, True, "2"),
        (400, {"code": 613}, True, "613"),
        (503, {"code": 1}, True, "503"),
    ],
)
async def test_graph_errors_are_classified_by_code(
    client: httpx.AsyncClient,
    meta_settings: Settings,
    graph_sim: GraphSimulator,
    status: int,
    fields: dict[str, Any],
    retryable: bool,
    words: str,
) -> None:
    graph_sim.inject(status, **fields)
    with pytest.raises(ChannelSendError) as caught:
        await send(messenger.channel, client, meta_settings, target(PAGE, PSID), "hi")
    assert caught.value.retryable is retryable
    assert words in str(caught.value)
    assert caught.value.code == str(fields["code"])


async def test_retry_after_is_honoured_and_a_quoted_token_redacted(
    client: httpx.AsyncClient, meta_settings: Settings, graph_sim: GraphSimulator
) -> None:
    graph_sim.inject(429, code=4, headers={"Retry-After": "7"})
    with pytest.raises(ChannelSendError) as caught:
        await send(messenger.channel, client, meta_settings, target(PAGE, PSID), "hi")
    assert (caught.value.retryable, caught.value.retry_after) == (True, 7.0)
    graph_sim.inject(400, code=190, message=f"Malformed access token {TOKEN}")
    with pytest.raises(ChannelSendError) as caught:
        await send(messenger.channel, client, meta_settings, target(PAGE, PSID), "hi")
    assert TOKEN not in str(caught.value) and "[token]" in str(caught.value)


async def test_no_answer_is_retryable(client: httpx.AsyncClient, meta_settings: Settings) -> None:
    settings = meta_settings.model_copy(update={"graph_api_base_url": "http://127.0.0.1:9"})
    with pytest.raises(ChannelSendError) as caught:
        await send(messenger.channel, client, settings, target(PAGE, PSID), "hi")
    assert caught.value.retryable


# --- webhooks in ----------------------------------------------------------------------------------


def test_instagram_accepts_either_apps_signature(meta_settings: Settings) -> None:
    body = b'{"object":"instagram","entry":[]}'
    for secret in (INSTAGRAM_APP_SECRET, APP_SECRET):
        instagram.channel.verify(body, {"x-hub-signature-256": sign(body, secret)}, meta_settings)
    with pytest.raises(BadSignature):
        instagram.channel.verify(body, {"x-hub-signature-256": sign(body, "other")}, meta_settings)
    with pytest.raises(BadSignature):
        instagram.channel.verify(body, {}, meta_settings)
    # Messenger knows only the Meta app's secret.
    with pytest.raises(BadSignature):
        messenger.channel.verify(
            body, {"x-hub-signature-256": sign(body, INSTAGRAM_APP_SECRET)}, meta_settings
        )
    messenger.channel.verify(body, {"x-hub-signature-256": sign(body, APP_SECRET)}, meta_settings)


def test_without_secrets_webhooks_are_not_configured() -> None:
    bare = Settings(_env_file=None)  # type: ignore[call-arg]
    body = b"{}"
    headers = {"x-hub-signature-256": sign(body, APP_SECRET)}
    for channel in (instagram.channel, messenger.channel):
        with pytest.raises(WebhookNotConfigured):
            channel.verify(body, headers, bare)
    only_instagram = bare.model_copy(
        update={"instagram_app_secret": SecretStr(INSTAGRAM_APP_SECRET)}
    )
    instagram.channel.verify(
        body, {"x-hub-signature-256": sign(body, INSTAGRAM_APP_SECRET)}, only_instagram
    )


def test_handshake_answers_the_challenge_for_our_token(meta_settings: Settings) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "9"}
    for channel in (instagram.channel, messenger.channel):
        assert channel.handshake(params, meta_settings) == "9"
        assert channel.handshake({**params, "hub.verify_token": "x"}, meta_settings) is None
