"""`/metrics` after real traffic: a WhatsApp message answered end to end through the
simulators, a send Graph refuses, refused webhooks, and the backlog gauges while a turn waits
on the upstream."""

from __future__ import annotations

import time
from typing import Any

from parley.testing import GraphSimulator, OpenAISimulator, SimTurn
from tests.conftest import MakeParley, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts
from tests.observability.scrape import scrape, scrape_until, value

WAIT = 15.0


async def post(parley: Parley, payload: dict[str, Any]) -> None:
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


async def test_traffic_moves_the_figures(parley: Parley, graph_sim: GraphSimulator) -> None:
    answered, refused = "34612000001", "34612000002"
    _, before = await scrape(parley.client)

    await post(parley, whatsapp_texts(answered, ["hello"]))
    await graph_sim.wait_for_sends(1, timeout=WAIT)
    graph_sim.fail_sends(400, 131026)  # undeliverable: final, not retried
    await post(parley, whatsapp_texts(refused, ["hello again"]))
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='out' AND status='failed'", [(1,)], WAIT
    )
    bad = await parley.client.post(
        "/webhooks/whatsapp", content=b"{}", headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    assert bad.status_code == 401
    big = parley.settings.parley_max_webhook_bytes + 1
    too_large = await parley.client.post("/webhooks/whatsapp", content=b" " * big)
    assert too_large.status_code == 413
    text, after = await scrape(parley.client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    whatsapp = {"channel": "whatsapp"}
    assert moved("parley_webhooks_total", outcome="accepted", **whatsapp) == 2
    assert moved("parley_webhooks_total", outcome="bad_signature", **whatsapp) == 1
    assert moved("parley_webhooks_total", outcome="too_large", **whatsapp) == 1
    assert moved("parley_webhook_ack_seconds_count", **whatsapp) == 2
    assert moved("parley_webhook_messages_total", **whatsapp) == 2
    assert moved("parley_turns_total", outcome="answered") == 2
    assert moved("parley_turn_seconds_count", outcome="answered") == 2
    assert moved("parley_turn_seconds_sum", outcome="answered") > 0
    assert moved("parley_upstream_seconds_count") >= 2
    model = {"model": "gpt-5-mini"}
    assert moved("parley_tokens_total", kind="input", **model) > 0
    assert moved("parley_tokens_total", kind="output", **model) > 0
    assert moved("parley_cost_usd_total", **model) > 0
    assert moved("parley_sends_total", outcome="sent", code="", **whatsapp) == 1
    assert moved("parley_sends_total", outcome="failed", code="131026", **whatsapp) == 1
    assert moved("parley_dead_letters_total", stage="send") == 1
    # Bounded labels: nobody's number or conversation is a label.
    assert answered not in text and refused not in text
    assert "conversation_id" not in text and "contact" not in text


async def test_backlog_gauges_show_a_waiting_message(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = make_parley(parley_metrics_interval=0.05)
    openai_sim.latency = 2.0  # the turn waits on the upstream; the message stays unanswered
    await post(parley, whatsapp_texts("34612000003", ["are you there?"]))

    waiting = await scrape_until(
        parley.client,
        lambda s: (
            value(s, "parley_queue_depth") == 1 and value(s, "parley_queue_oldest_seconds") > 0.2
        ),
    )
    assert value(waiting, "parley_backlog_sampled_timestamp_seconds") > 0
    await graph_sim.wait_for_sends(1, timeout=WAIT)
    await scrape_until(
        parley.client,
        lambda s: (
            value(s, "parley_queue_depth") == 0
            and value(s, "parley_queue_oldest_seconds") == 0
            and value(s, "parley_inbox_backlog") == 0
        ),
    )


def hand_off(turn: SimTurn) -> list[dict[str, Any]] | None:
    if turn.user_texts and "human" in turn.user_texts[-1]:
        return [{"name": "handoff_to_human", "arguments": {"reason": "asked for a person"}}]
    return None


async def test_a_handoff_is_counted_and_its_waiting_messages_are_not_backlog(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = make_parley(parley_metrics_interval=0.05)
    _, before = await scrape(parley.client)
    openai_sim.tool_calls = hand_off
    await post(parley, whatsapp_texts("34612000004", ["I want a human"]))
    await graph_sim.wait_for_sends(1, timeout=WAIT)
    await parley.wait_for_rows("SELECT mode FROM conversations", [("human",)])
    await post(parley, whatsapp_texts("34612000004", ["hello? anyone?"]))
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='received'", [(1,)]
    )

    # The message waits for a person, not for a worker: no backlog, once the gauges are read
    # after it was filed (the sample's timestamp moves past this moment).
    filed_at = time.time()
    after = await scrape_until(
        parley.client, lambda s: value(s, "parley_backlog_sampled_timestamp_seconds") > filed_at
    )
    assert value(after, "parley_queue_depth") == 0
    assert value(after, "parley_handoffs_total", reason="agent") == (
        value(before, "parley_handoffs_total", reason="agent") + 1
    )
