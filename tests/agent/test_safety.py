"""What customer text may reach the model, and what reaches the logs."""

from __future__ import annotations

import json

import pytest

from parley.agent.safety import CARD_MASK, limit_length, prepare_input, redact_cards
from parley.observability.logging import mask_pii, redact
from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import MakeParley, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts


@pytest.mark.parametrize(
    "text",
    ["my card is 4111 1111 1111 1111 thanks", "4111-1111-1111-1111", "5555555555554444"],
)
def test_card_numbers_are_masked(text: str) -> None:
    masked = redact_cards(text)
    assert CARD_MASK in masked
    assert "1111" not in masked and "4444" not in masked


@pytest.mark.parametrize(
    "text", ["order 4111111111111112", "call +34 600 000 001", "tracking 123456789012"]
)
def test_numbers_that_are_not_cards_stay(text: str) -> None:
    assert redact_cards(text) == text


def test_long_text_is_cut_for_the_model() -> None:
    assert limit_length("x" * 50, 10).startswith("x" * 10)
    assert len(limit_length("x" * 50, 10)) < 50
    assert limit_length("short", 10) == "short"
    assert prepare_input("y" * 20, max_chars=5, redact=False).startswith("yyyyy [message cut")


def test_logs_mask_phones_emails_and_tokens_but_not_ids() -> None:
    event = {
        "event": "delivery.failed",
        "reason": "graph 400: cannot send to +34 600 000 001 or ana@example.com",
        "correlation_id": "f9764015033e45f5a38f64f9ab795bb5",
        "channel_message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        "header": "Authorization: Bearer sk-abc.def",
        "access_token": "EAAG123",
        "timestamp": "2026-11-23T11:06:51.394341Z",
    }
    out = redact(None, "info", dict(event))
    assert "600 000 001" not in out["reason"] and "ana@example.com" not in out["reason"]
    assert out["correlation_id"] == event["correlation_id"]
    assert out["channel_message_id"] == event["channel_message_id"]
    assert out["timestamp"] == event["timestamp"]
    assert "sk-abc" not in out["header"]
    assert out["access_token"] == "[redacted]"
    assert mask_pii("16505551234") == "[phone]"


async def test_card_numbers_and_long_texts_are_changed_only_upstream(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    text = "pay with 4111 1111 1111 1111 please " + "z" * 5000
    body = body_bytes(whatsapp_texts("34600000111", [text]))
    await parley.client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
    await graph_sim.wait_for_sends(1, timeout=10)

    sent = json.dumps(openai_sim.requests_to("/v1/responses")[0].json["input"])
    assert "4111" not in sent and CARD_MASK in sent
    assert "z" * 4001 not in sent and "[message cut" in sent
    ((stored,),) = await parley.rows("SELECT text FROM messages WHERE direction='in'")
    assert stored == text


@pytest.fixture
def strict_parley(make_parley: MakeParley) -> Parley:
    return make_parley(parley_customer_messages_per_minute=3)


async def test_a_customer_over_the_rate_gets_one_notice(
    strict_parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = strict_parley
    limit = parley.settings.parley_customer_messages_per_minute
    for number in range(limit):
        body = body_bytes(whatsapp_texts("34600000121", [f"question {number}"]))
        await parley.client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
        await graph_sim.wait_for_sends(number + 1, timeout=10)
    for number in range(2):  # two more within the minute
        body = body_bytes(whatsapp_texts("34600000121", [f"extra {number}"]))
        await parley.client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
    await graph_sim.wait_for_sends(limit + 1, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='ignored'", [(2,)]
    )

    texts = graph_sim.texts_to("34600000121")
    assert texts[:limit] == [f"Echo: question {n}" for n in range(limit)]
    assert texts[limit:] == [parley.settings.parley_rate_limit_reply]  # once, not twice
    assert len(openai_sim.requests_to("/v1/responses")) == limit


@pytest.fixture
def moderated(make_parley: MakeParley) -> Parley:
    return make_parley(parley_moderation=True)


async def test_flagged_input_gets_the_refusal_and_never_reaches_the_model(
    moderated: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    for number, text in enumerate(["something [flagged] here", "a fair question"], start=1):
        body = body_bytes(whatsapp_texts("34600000141", [text]))
        await moderated.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
        await graph_sim.wait_for_sends(number, timeout=10)

    assert graph_sim.texts_to("34600000141") == [
        moderated.settings.parley_moderation_reply,
        "Echo: a fair question",
    ]
    (request,) = openai_sim.requests_to("/v1/responses")
    assert "[flagged]" not in json.dumps(request.json)
    assert len(openai_sim.requests_to("/v1/moderations")) == 2
    await moderated.wait_for_rows(
        "SELECT status FROM messages WHERE direction='in' ORDER BY sequence_no",
        [("refused",), ("answered",)],
    )
