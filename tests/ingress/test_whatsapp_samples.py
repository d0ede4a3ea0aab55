"""Every real WhatsApp sample signed and posted to a running Parley, three times (Meta
redelivers): the ones a customer expects an answer to are answered once per customer turn, the
rest (statuses, reactions, notices) are filed and never answered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from parley.testing import GraphSimulator, OpenAISimulator, Recorded
from tests.conftest import Parley
from tests.factories import (
    FIXTURES,
    PHONE_NUMBER_ID,
    body_bytes,
    sample,
    signed_headers,
    whatsapp_texts,
)

PROBE = "34600009999"
ISRAEL, SHEENA = "972987654321", "16505551234"  # the two customers most samples come from
A, B = "1122334455667", PHONE_NUMBER_ID  # the business numbers they write to

# Who gets a reply (phone number, or the business-scoped user id when there is none), from
# which number, and what the agent must have been told. A burst is one turn: one reply.
MODEL: dict[str, tuple[list[tuple[str, str]], str]] = {
    "audio_voice.json": ([(A, ISRAEL)], "voice note; you cannot listen to audio"),
    "batch_multiple_changes.json": ([("1093849293", SHEENA)], "San Francisco, Market Street"),
    "batch_multiple_messages.json": ([("987654321", "1234567890")], "Hello from a text message"),
    "bsuid_text_username_no_phone.json": ([(B, "US.13491208655302741918")], "another color?"),
    "button_template_quick_reply.json": ([(A, ISRAEL)], "title"),
    "contacts.json": ([(A, ISRAEL)], "Chandler Bing (+1 555-555-5555)"),
    "dashboard_test_message.json": ([("123456123", "16315551181")], "this is a text message"),
    "document.json": ([(B, SHEENA)], "sent a document: receipt.pdf (application/pdf)"),
    "image.json": ([(A, ISRAEL)], "image, but it could not be loaded: the download failed"),
    "interactive_button_reply.json": ([(B, SHEENA)], "Cancel"),
    "interactive_list_reply.json": ([(B, SHEENA)], "Priority Mail Express — Next Day"),
    "location.json": ([(A, ISRAEL)], "[Location: Facebook HQ, 1 Hacker Way"),
    "referral_click_to_whatsapp_ad.json": ([(B, SHEENA)], "Can I get more info about this?"),
    "reply_with_context.json": ([(A, ISRAEL)], "replied text"),
    "sticker.json": ([(A, ISRAEL)], "[The customer sent a sticker.]"),
    "text.json": ([(B, SHEENA)], "Does it come in another color?"),
    "text_product_inquiry_referred_product.json": ([(B, SHEENA)], "Is this still available?"),
    "video.json": ([(A, ISRAEL)], "[The customer sent a video.] caption"),
}
# Nothing the agent could read: the customer is told so (PARLEY_UNSUPPORTED_REPLY), no model.
UNSUPPORTED = {"order.json": [(A, ISRAEL)], "unsupported.json": [(A, ISRAEL)]}
# Statuses of messages Parley never sent, a reaction and a number change: never answered.
NOT_ANSWERED = [
    "bsuid_status_delivered_no_phone.json",
    "reaction.json",
    "status_delivered.json",
    "status_failed_131026.json",
    "status_failed_131049.json",
    "status_read.json",
    "status_sent.json",
    "system_user_changed_number.json",
]
# Media ids looked up at the Graph simulator (which answers 404): only images are fetched;
# documents, videos and stickers are described, and audio is not transcribed by default.
LOOKUPS = {"image.json": ["65463453"]}


def test_the_lists_cover_every_sample() -> None:
    names = {path.name for path in (FIXTURES / "whatsapp").glob("*.json")}
    assert len(names) == len(MODEL) + len(UNSUPPORTED) + len(NOT_ANSWERED) == 28
    assert names == set(MODEL) | set(UNSUPPORTED) | set(NOT_ANSWERED)


async def post(parley: Parley, payload: dict[str, Any]) -> int:
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    return response.status_code


def recipient(send: Recorded) -> str:
    return str(send.json.get("to") or send.json.get("recipient")) if send.json else ""


def customers(payload: dict[str, Any]) -> set[str]:
    """Everyone a sample names: senders, their contacts, and statuses' recipients."""
    found = set()
    for entry in payload["entry"]:
        for change in entry["changes"]:
            value = change["value"]
            for item in value.get("messages", []) + (value.get("contacts") or []):
                found |= {item.get(k) for k in ("from", "from_user_id", "wa_id", "user_id")}
            for status in value.get("statuses", []):
                found |= {status.get("recipient_id"), status.get("recipient_user_id")}
    return found - {None}


def inbound_count(payload: dict[str, Any]) -> int:
    return sum(
        len(change["value"].get("messages", []))
        for entry in payload["entry"]
        for change in entry["changes"]
        if change["field"] == "messages"
    )


async def probe(parley: Parley, graph_sim: GraphSimulator, sends_before: int) -> None:
    """Another customer writes and is answered: the worker is alive and has caught up."""
    await parley.wait_filed()
    assert await post(parley, whatsapp_texts(PROBE, ["ping"])) == 200
    await graph_sim.wait_for_sends(sends_before + 1, timeout=10)
    assert graph_sim.texts_to(PROBE) == ["Echo: ping"]


@pytest.mark.parametrize("name", sorted(MODEL) + sorted(UNSUPPORTED))
async def test_a_sample_is_answered_once_per_turn(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, name: str
) -> None:
    expected, told = MODEL.get(name) or (UNSUPPORTED[name], "")
    payload = sample(f"whatsapp/{name}")

    assert await post(parley, payload) == 200
    assert await post(parley, payload) == 200  # Meta redelivers
    await graph_sim.wait_for_sends(len(expected), timeout=10)
    assert await post(parley, payload) == 200  # and again after the answer
    await probe(parley, graph_sim, len(expected))

    answers = [s for s in graph_sim.sends if recipient(s) != PROBE]
    assert sorted((s.path, recipient(s)) for s in answers) == sorted(
        (f"/v26.0/{account}/messages", user) for account, user in expected
    )
    requests = [r.json for r in openai_sim.response_requests]
    if name in UNSUPPORTED:
        assert len(requests) == 1  # the probe's
        texts = [s.json["text"]["body"] for s in answers if s.json]
        assert texts == [parley.settings.parley_unsupported_reply] * len(expected)
    else:
        assert len(requests) == len(expected) + 1
        assert any(told in json.dumps(r["input"], ensure_ascii=False) for r in requests)
    lookups = [r.path for r in graph_sim.requests if r.method == "GET"]
    assert lookups == [f"/v26.0/{media_id}" for media_id in LOOKUPS.get(name, [])]
    # Each message is stored once, and every one of them has been dealt with.
    assert await parley.rows("SELECT count(*) FROM messages WHERE direction='in'") == [
        (inbound_count(payload) + 1,)
    ]
    await parley.wait_for_rows("SELECT count(*) FROM messages WHERE status='received'", [(0,)])


@pytest.mark.parametrize("name", NOT_ANSWERED)
async def test_a_sample_that_is_no_question_is_filed_not_answered(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, name: str
) -> None:
    payload = sample(f"whatsapp/{name}")
    assert customers(payload)

    assert await post(parley, payload) == 200
    assert await post(parley, payload) == 200
    await probe(parley, graph_sim, 0)

    assert [recipient(s) for s in graph_sim.sends] == [PROBE]
    assert not customers(payload) & {recipient(r) for r in graph_sim.requests}
    assert len(graph_sim.receipts) == 1  # the probe's: nothing of theirs is marked read
    assert len(openai_sim.response_requests) == 1
    assert await parley.rows("SELECT count(*) FROM messages WHERE status='received'") == [(0,)]
    assert await parley.rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='answered'"
    ) == [(1,)]  # the probe's
