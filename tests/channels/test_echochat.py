"""A second channel, registered only for these tests, served by a real running Parley: its
webhooks in at ``/webhooks/echochat``, the agent's answers out through its own send, with no
change anywhere else."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from parley.channels import registry
from parley.channels.text import UTF8_BYTES, split_text
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.channels.echochat import NAME, EchoChat
from tests.conftest import MakeParley, Parley
from tests.factories import VERIFY_TOKEN, signed_headers

TOKEN = "test-echochat-token"
PAGE = "echo-page-1"


@pytest.fixture
def echochat() -> Iterator[EchoChat]:
    with registry.registered(EchoChat()) as channel:
        assert isinstance(channel, EchoChat)
        yield channel


@pytest.fixture
def parley_with_echochat(echochat: EchoChat, make_parley: MakeParley) -> Parley:
    # The environment's token for a channel is <NAME>_ACCESS_TOKEN.
    return make_parley(**{f"{NAME}_access_token": SecretStr(TOKEN)})


def webhook(**items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"account": PAGE, **items}).encode()


def text_from(user: str, text: str, message_id: str) -> dict[str, Any]:
    return {"id": message_id, "from": user, "name": "Ana", "text": text, "ts": int(time.time())}


async def post(parley: Parley, body: bytes, headers: dict[str, str] | None = None) -> int:
    response = await parley.client.post(
        f"/webhooks/{NAME}", content=body, headers=headers or signed_headers(body)
    )
    return response.status_code


async def wait_for_receipts(channel: EchoChat, n: int, timeout: float = 10.0) -> list[str]:
    """The receipts once `n` have arrived (Parley records them from its own thread)."""

    def wait() -> bool:
        with channel.receipt_arrived:
            return channel.receipt_arrived.wait_for(lambda: len(channel.receipts) >= n, timeout)

    if not await asyncio.to_thread(wait):
        raise TimeoutError(f"expected {n} receipts, got {channel.receipts}")
    return channel.receipts


async def test_handshake(parley_with_echochat: Parley) -> None:
    client = parley_with_echochat.client
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}
    ok = await client.get(f"/webhooks/{NAME}", params=params)
    assert (ok.status_code, ok.text) == (200, "42")
    wrong = await client.get(f"/webhooks/{NAME}", params={**params, "hub.verify_token": "no"})
    assert (wrong.status_code, wrong.text) == (403, "verification failed")


async def test_message_is_stored_answered_and_sent_through_the_channel(
    parley_with_echochat: Parley,
    echochat: EchoChat,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
) -> None:
    parley = parley_with_echochat
    assert await post(parley, webhook(messages=[text_from("user-7", "hello echo", "ec-1")])) == 200

    (send,) = await graph_sim.wait_for_sends(1, timeout=10)
    assert send.path == f"/v26.0/{PAGE}/messages"
    assert send.headers["authorization"] == f"Bearer {TOKEN}"
    assert send.json == {"recipient": {"id": "user-7"}, "message": {"text": "Echo: hello echo"}}
    assert await wait_for_receipts(echochat, 1) == ["ec-1"]
    assert [r.path for r in openai_sim.requests if r.path == "/v1/responses"] == ["/v1/responses"]
    await parley.wait_for_rows(
        "SELECT a.channel, a.external_id, m.direction, m.status FROM messages m"
        " JOIN accounts a ON a.id = m.account_id ORDER BY m.sequence_no",
        [(NAME, PAGE, "in", "answered"), (NAME, PAGE, "out", "sent")],
    )

    ((mid,),) = await parley.rows("SELECT channel_message_id FROM messages WHERE direction='out'")
    assert str(mid).startswith("mid.")
    status = {"id": mid, "status": "delivered", "ts": int(time.time())}
    assert await post(parley, webhook(statuses=[status])) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT status FROM messages WHERE direction='out'") == [
        ("delivered",)
    ]


async def test_a_long_answer_is_split_within_the_channel_byte_limit(
    parley_with_echochat: Parley, graph_sim: GraphSimulator
) -> None:
    text = " ".join(["Crème brûlée, 5 €."] * 90)  # ~1,600 characters, ~2,000 bytes
    expected = split_text(f"Echo: {text}", 1000, UTF8_BYTES)
    assert len(expected) > len(split_text(f"Echo: {text}", 1000))  # bytes, not characters

    body = webhook(messages=[text_from("user-8", text, "ec-2")])
    assert await post(parley_with_echochat, body) == 200
    sends = await graph_sim.wait_for_sends(len(expected), timeout=10)

    # The simulator refuses more than 1,000 bytes, so every part it accepted fits.
    assert [s.json["message"]["text"] for s in sends] == expected
    assert graph_sim.texts_to("user-8") == expected


async def test_a_bad_signature_is_refused_and_nothing_stored(
    parley_with_echochat: Parley, openai_sim: OpenAISimulator
) -> None:
    body = webhook(messages=[text_from("user-9", "forged", "ec-3")])
    forged = {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert await post(parley_with_echochat, body, forged) == 401
    assert await post(parley_with_echochat, b"[]") == 400  # signed, but not EchoChat's shape
    assert await parley_with_echochat.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await parley_with_echochat.rows("SELECT count(*) FROM inbox") == [(0,)]


async def test_a_channel_nobody_registered_is_not_found(parley: Parley) -> None:
    body = webhook(messages=[text_from("user-10", "anyone?", "ec-4")])
    with registry.registered(EchoChat()):
        assert await post(parley, body) == 200
    assert await post(parley, body) == 404
    assert (await parley.client.get(f"/webhooks/{NAME}")).status_code == 404
    assert NAME not in registry.names()


async def test_attachment_urls_are_downloaded_from_allowed_hosts_only(
    parley_with_echochat: Parley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    graph_server: tuple[GraphSimulator, ServerThread],
) -> None:
    # Instagram and Messenger send attachment URLs, not media ids: a channel that names one
    # gets it downloaded with no code of its own, and only from Meta's (or the configured) hosts.
    image = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    cdn = graph_server[1].url + graph_sim.media.path_of(
        graph_sim.media.add(image, "image/png", needs_token=False)
    )
    items = [
        {**text_from("user-11", "", "ec-5"), "attachments": [{"type": "image", "url": cdn}]},
        {
            **text_from("user-11", "", "ec-6"),
            # The Messenger sample's URL: not a Meta host, never asked.
            "attachments": [{"type": "image", "url": "https://image-url/foo.png"}],
        },
    ]
    assert await post(parley_with_echochat, webhook(messages=items)) == 200
    await graph_sim.wait_for_sends(1, timeout=10)

    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert openai_sim.images == [{"type": "input_image", "image_url": data_url}]
    (request,) = openai_sim.response_requests
    assert request.json is not None
    second = request.json["input"][1]["content"]
    assert second == [
        {
            "type": "input_text",
            "text": "[The customer sent an image, but it could not be loaded: the download "
            "failed.]",
        }
    ]
    (download,) = graph_sim.media_downloads
    assert download.headers["authorization"] == f"Bearer {TOKEN}"
