"""WhatsApp end to end: signed real payloads in over HTTP, replies observed at the Graph
simulator, the store read as an auditor would."""

from __future__ import annotations

import asyncio
import json

import pytest

from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import WHATSAPP_TOKEN, Parley
from tests.factories import (
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    body_bytes,
    message_ids,
    sample,
    signed_headers,
    whatsapp_texts,
)


async def post_signed(parley: Parley, payload: dict[str, object]) -> int:
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    return response.status_code


def responses_requests(openai_sim: OpenAISimulator) -> list[dict[str, object]]:
    return [r.json for r in openai_sim.requests if r.path == "/v1/responses" and r.json is not None]


async def test_handshake_echoes_challenge_only_for_our_token(parley: Parley) -> None:
    ok = await parley.client.get(
        "/webhooks/whatsapp",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200
    assert ok.text == "1158201444"
    wrong = await parley.client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    )
    assert wrong.status_code == 403
    missing = await parley.client.get("/webhooks/whatsapp", params={"hub.challenge": "1"})
    assert missing.status_code == 403


async def test_text_message_is_answered_as_a_reply(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    payload = sample("whatsapp/text.json")
    wamid = message_ids(payload)[0]

    assert await post_signed(parley, payload) == 200
    await graph_sim.wait_for_sends(1, timeout=10)

    send = graph_sim.sends[0]
    assert send.path == f"/v26.0/{PHONE_NUMBER_ID}/messages"
    assert send.headers["authorization"] == f"Bearer {WHATSAPP_TOKEN}"
    assert send.json is not None
    assert send.json["to"] == "16505551234"
    assert send.json["context"] == {"message_id": wamid}
    assert send.json["text"]["body"] == "Echo: Does it come in another color?"

    request = responses_requests(openai_sim)[0]
    assert request["model"] == "gpt-5-mini"
    assert isinstance(request["instructions"], str) and request["instructions"]
    assert str(request["conversation"]).startswith("conv_")
    identifier = str(request["safety_identifier"])
    assert identifier and "16505551234" not in identifier
    assert "Does it come in another color?" in json.dumps(request["input"])

    await parley.wait_for_rows(
        "SELECT direction, status FROM messages ORDER BY sequence_no",
        [("in", "answered"), ("out", "sent")],
    )
    inbound, outbound = await parley.rows(
        "SELECT direction, status, sequence_no, response_id, input_tokens, output_tokens,"
        " latency_ms, channel_message_id FROM messages ORDER BY sequence_no"
    )
    assert inbound[:3] == ("in", "answered", 1)
    assert inbound[7] == wamid
    assert outbound[:3] == ("out", "sent", 2)
    assert str(outbound[3]).startswith("resp_")
    assert outbound[4] > 0 and outbound[5] > 0 and outbound[6] >= 0
    assert str(outbound[7]).startswith("wamid.")
    # The customer's message was marked read, with typing shown, before the answer.
    assert [r.json["message_id"] for r in graph_sim.receipts if r.json] == [wamid]


async def test_batch_for_one_customer_is_answered_in_one_turn_in_order(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    texts = ["first question", "second question", "third question"]
    assert await post_signed(parley, whatsapp_texts("34600000001", texts)) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    # Nothing left to answer or to send: a second, wrong send could no longer happen.
    await parley.wait_for_rows("SELECT count(*) FROM messages WHERE status='received'", [(0,)])
    await parley.wait_for_rows("SELECT count(*) FROM outbox", [(0,)])

    requests = responses_requests(openai_sim)
    assert len(requests) == 1
    sent_input = json.dumps(requests[0]["input"])
    positions = [sent_input.index(text) for text in texts]
    assert positions == sorted(positions)
    assert len(graph_sim.sends) == 1
    await parley.wait_for_rows(
        "SELECT status FROM messages WHERE direction='in' ORDER BY sequence_no",
        [("answered",)] * 3,
    )


async def test_batch_for_three_customers_answers_each(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    payload = whatsapp_texts("34600000011", ["hello from one"])
    value = payload["entry"][0]["changes"][0]["value"]
    for phone, text in [("34600000012", "hello from two"), ("34600000013", "hello from three")]:
        other = whatsapp_texts(phone, [text])["entry"][0]["changes"][0]["value"]
        value["messages"] += other["messages"]
        value["contacts"] += other["contacts"]

    assert await post_signed(parley, payload) == 200
    await graph_sim.wait_for_sends(3, timeout=10)

    assert graph_sim.texts_to("34600000011") == ["Echo: hello from one"]
    assert graph_sim.texts_to("34600000012") == ["Echo: hello from two"]
    assert graph_sim.texts_to("34600000013") == ["Echo: hello from three"]


async def test_a_redelivered_webhook_is_answered_once(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    payload = whatsapp_texts("34600000021", ["only once please"])
    statuses = await asyncio.gather(*(post_signed(parley, payload) for _ in range(3)))
    assert statuses == [200, 200, 200]
    await graph_sim.wait_for_sends(1, timeout=10)
    assert await post_signed(parley, payload) == 200  # and again after it was answered
    await asyncio.sleep(0.5)

    assert graph_sim.texts_to("34600000021") == ["Echo: only once please"]
    assert len(responses_requests(openai_sim)) == 1
    assert await parley.rows("SELECT count(*) FROM messages WHERE direction='in'") == [(1,)]


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "garbage"])
async def test_bad_or_missing_signature_is_refused_and_nothing_stored(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, signature: str | None
) -> None:
    body = body_bytes(sample("whatsapp/text.json"))
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = await parley.client.post("/webhooks/whatsapp", content=body, headers=headers)

    assert response.status_code == 401
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]
    await asyncio.sleep(0.2)
    assert openai_sim.requests == [] and graph_sim.requests == []


async def test_signed_body_that_is_not_json_is_a_400(parley: Parley) -> None:
    body = b"{not json"
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 400
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]


async def test_upstream_500_then_success_answers_normally(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.inject(500, times=1, path="/v1/responses")
    assert await post_signed(parley, whatsapp_texts("34600000031", ["are you there?"])) == 200
    await graph_sim.wait_for_sends(1, timeout=10)

    assert graph_sim.texts_to("34600000031") == ["Echo: are you there?"]
    statuses = [r.status for r in openai_sim.requests if r.path == "/v1/responses"]
    assert statuses == [500, 200]
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='in'", [("answered",)])


async def test_upstream_down_sends_the_fallback_and_marks_the_message_failed(
    parley: Parley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    capfd: pytest.CaptureFixture[str],
) -> None:
    openai_sim.fail_always(500, path="/v1/responses")
    payload = whatsapp_texts("34600000041", ["hello?"])
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200
    correlation_id = response.headers["x-request-id"]
    await graph_sim.wait_for_sends(1, timeout=15)

    (reply,) = graph_sim.texts_to("34600000041")
    assert reply == parley.settings.parley_fallback_reply
    assert "500" not in reply and "error" not in reply.lower()
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='out'", [("sent",)])
    (inbound,) = await parley.rows("SELECT status, error FROM messages WHERE direction='in'")
    assert inbound[0] == "failed"
    assert "500" in inbound[1]
    # 1 try + OPENAI_MAX_RETRIES retries, then no more.
    assert len([r for r in openai_sim.requests if r.path == "/v1/responses"]) == 3
    captured = capfd.readouterr()
    logs = captured.out + captured.err
    failed = [line for line in logs.splitlines() if "turn.failed" in line]
    assert failed and correlation_id in failed[0]
    sent = [line for line in logs.splitlines() if "delivery.sent" in line]
    assert sent and correlation_id in sent[-1]


async def test_status_webhooks_move_the_outbound_message_forward_only(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    assert await post_signed(parley, whatsapp_texts("34600000051", ["track me"])) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='out'", [("sent",)])
    ((wamid,),) = await parley.rows("SELECT channel_message_id FROM messages WHERE direction='out'")

    def status_payload(name: str) -> dict[str, object]:
        payload = sample(f"whatsapp/{name}.json")
        value = payload["entry"][0]["changes"][0]["value"]
        value["metadata"]["phone_number_id"] = PHONE_NUMBER_ID
        value["statuses"][0]["id"] = wamid
        return payload

    assert await post_signed(parley, status_payload("status_delivered")) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT status FROM messages WHERE direction='out'") == [
        ("delivered",)
    ]
    assert await post_signed(parley, status_payload("status_sent")) == 200  # late, out of order
    await parley.wait_filed()
    assert await parley.rows("SELECT status FROM messages WHERE direction='out'") == [
        ("delivered",)
    ]
    assert await post_signed(parley, status_payload("status_read")) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT status FROM messages WHERE direction='out'") == [("read",)]
    assert await post_signed(parley, status_payload("status_failed_131026")) == 200
    await parley.wait_filed()
    ((status, error),) = await parley.rows(
        "SELECT status, error FROM messages WHERE direction='out'"
    )
    assert status == "failed" and "131026" in error


async def test_reactions_are_stored_but_not_answered(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    assert await post_signed(parley, sample("whatsapp/reaction.json")) == 200
    await parley.wait_filed()
    await asyncio.sleep(0.5)
    assert graph_sim.sends == []
    assert await parley.rows("SELECT kind, status FROM messages") == [("reaction", "ignored")]


async def test_customer_without_phone_is_answered_by_business_scoped_id(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    assert await post_signed(parley, sample("whatsapp/bsuid_text_username_no_phone.json")) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    body = graph_sim.sends[0].json
    assert body is not None
    assert "to" not in body
    assert body["recipient"] == "US.13491208655302741918"


async def test_graph_send_failures_are_retried_then_marked_failed(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    # The read receipt goes to the same path just before the reply, so it takes one fault too.
    graph_sim.inject(500, times=2, path=f"/v26.0/{PHONE_NUMBER_ID}/messages")
    assert await post_signed(parley, whatsapp_texts("34600000061", ["retry me"])) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    assert graph_sim.texts_to("34600000061") == ["Echo: retry me"]

    graph_sim.inject(400, times=2, code=131026, path=f"/v26.0/{PHONE_NUMBER_ID}/messages")
    assert await post_signed(parley, whatsapp_texts("34600000062", ["undeliverable"])) == 200
    for _ in range(100):
        rows = await parley.rows(
            "SELECT m.status, m.error FROM messages m JOIN contacts c ON c.phone='34600000062'"
            " JOIN conversations v ON v.contact_id=c.id AND v.id=m.conversation_id"
            " WHERE m.direction='out'"
        )
        if rows and rows[0][0] == "failed":
            break
        await asyncio.sleep(0.05)
    assert rows and rows[0][0] == "failed" and "131026" in rows[0][1]
