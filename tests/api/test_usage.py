"""Usage and cost: every answer's tokens and price stored on it, summed per conversation and
per day, account and model."""

from __future__ import annotations

from decimal import Decimal

from parley.agent.llm import Usage
from parley.agent.pricing import DEFAULT_PRICES, load_prices, turn_cost
from parley.testing import GraphSimulator, OpenAISimulator
from tests.api.test_admin import ADMIN
from tests.conftest import Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts


def test_cost_uses_the_cached_price_for_cached_input_and_family_prices_for_snapshots() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=100_000)
    # gpt-5-mini: 0.6 M fresh × 0.25 + 0.4 M cached × 0.025 + 0.1 M out × 2 = 0.36 USD
    assert turn_cost("gpt-5-mini", usage, DEFAULT_PRICES) == Decimal("0.36")
    assert turn_cost("gpt-5-mini-2025-08-07", usage, DEFAULT_PRICES) == Decimal("0.36")
    assert turn_cost("my-local-llama", usage, DEFAULT_PRICES) is None
    custom = load_prices('{"my-local-llama": {"input": 1, "output": 1}}')
    assert turn_cost("my-local-llama", usage, custom) == Decimal("1.1")


async def test_usage_and_cost_are_stored_and_summed(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    for number, text in enumerate(["how much is it?", "and shipping?", "thanks"], start=1):
        body = body_bytes(whatsapp_texts("34600000101", [text]))
        response = await parley.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
        assert response.status_code == 200
        await graph_sim.wait_for_sends(number, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='out' AND status='sent'", [(3,)]
    )

    # Each answer priced at gpt-5-mini's list price from the usage the upstream reported.
    rows = await parley.rows(
        "SELECT input_tokens, cached_tokens, output_tokens, cost_usd FROM messages"
        " WHERE direction='out' ORDER BY sequence_no"
    )
    assert len(rows) == 3
    for input_tokens, cached, output, cost in rows:
        assert input_tokens > 0 and output > 0
        expected = turn_cost(
            "gpt-5-mini",
            Usage(input_tokens=input_tokens, cached_tokens=cached, output_tokens=output),
            DEFAULT_PRICES,
        )
        assert Decimal(str(cost)) == expected
    # Later turns continue the conversation upstream, which reports cached input.
    assert rows[-1][1] > 0

    ((conversation_id,),) = await parley.rows("SELECT id FROM conversations")
    totals = (
        await parley.client.get(f"/admin/conversations/{conversation_id}/usage", headers=ADMIN)
    ).json()
    assert totals["requests"] == 3
    assert totals["input_tokens"] == sum(r[0] for r in rows)
    assert totals["output_tokens"] == sum(r[2] for r in rows)
    assert Decimal(totals["cost_usd"]) == sum(Decimal(str(r[3])) for r in rows)

    (day,) = (await parley.client.get("/admin/usage", headers=ADMIN)).json()
    assert day["model"] == "gpt-5-mini" and day["requests"] == 3
    assert day["input_tokens"] == totals["input_tokens"]
    assert day["cached_tokens"] == sum(r[1] for r in rows)
    assert Decimal(day["cost_usd"]) == Decimal(totals["cost_usd"])
