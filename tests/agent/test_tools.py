"""Function tools: the Responses API's calling loop through the simulator, the built-in
handoff and time tools, and a tool declared in configuration."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from parley.testing import GraphSimulator, OpenAISimulator, SimTurn
from tests.conftest import MakeParley, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts

TOOLS = json.dumps(
    [
        {
            "name": "order_status",
            "description": "Where an order is.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
            "python": "tests.agent.sample_tools:order_status",
        }
    ]
)


@pytest.fixture
def tooled(make_parley: MakeParley) -> Parley:
    return make_parley(parley_tools=TOOLS)


def calls_for(turn: SimTurn) -> list[dict[str, Any]] | None:
    said = turn.user_texts[-1] if turn.user_texts else ""
    if "order" in said:
        return [{"name": "order_status", "arguments": {"order_id": "A-17"}}]
    if "human" in said:
        return [{"name": "handoff_to_human", "arguments": {"reason": "asked for a person"}}]
    if "time" in said:
        return [{"name": "current_time", "arguments": {}}]
    return None


@pytest.fixture
def calling_sim(openai_sim: OpenAISimulator) -> OpenAISimulator:
    """The simulated model asks for tools as `calls_for` says (`openai_sim` undoes it)."""
    openai_sim.tool_calls = calls_for
    return openai_sim


async def say(parley: Parley, text: str) -> None:
    body = body_bytes(whatsapp_texts("34600000131", [text]))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


async def test_a_configured_tool_is_called_and_its_output_answers(
    tooled: Parley, calling_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim = calling_sim
    await say(tooled, "where is my order A-17?")
    await graph_sim.wait_for_sends(1, timeout=10)

    first, second = [r.json for r in openai_sim.requests_to("/v1/responses")]
    assert {t["name"] for t in first["tools"]} >= {"order_status", "handoff_to_human"}
    (output,) = [i for i in second["input"] if i.get("type") == "function_call_output"]
    assert json.loads(output["output"])["status"] == "shipped"
    assert second["conversation"] == first["conversation"]
    (reply,) = graph_sim.texts_to("34600000131")
    assert "shipped" in reply  # the simulated model answers with what the tool said
    rows = await tooled.rows(
        "SELECT direction, sender, kind, status FROM messages ORDER BY sequence_no"
    )
    assert rows[1] == ("internal", "tool", "tool_call", "done")
    assert rows[2][:2] == ("out", "agent")
    await tooled.wait_for_rows("SELECT count(*) FROM outbox", [(0,)])  # the tool call: never


async def test_the_handoff_tool_stops_the_agent(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.tool_calls = calls_for
    try:
        await say(parley, "I want to talk to a human")
        await graph_sim.wait_for_sends(1, timeout=10)
        await parley.wait_for_rows("SELECT mode, assignee FROM conversations", [("human", "agent")])
        calls = len(openai_sim.requests_to("/v1/responses"))
        await say(parley, "hello? anyone?")
        await parley.wait_for_rows("SELECT count(*) FROM messages WHERE direction='in'", [(2,)])
        await asyncio.sleep(0.5)  # a wrong answer by the agent would be sent by now
    finally:
        openai_sim.tool_calls = None

    assert calls == 2  # the call, then the answer with the tool's output
    assert len(openai_sim.requests_to("/v1/responses")) == calls  # nothing after the handoff
    assert len(graph_sim.texts_to("34600000131")) == 1
    assert await parley.rows(
        "SELECT status FROM messages WHERE direction='in' ORDER BY sequence_no DESC LIMIT 1"
    ) == [("received",)]  # waiting for a person, not answered by the agent


async def test_current_time_tool(
    parley: Parley, calling_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await say(parley, "what time is it?")
    await graph_sim.wait_for_sends(1, timeout=10)
    (reply,) = graph_sim.texts_to("34600000131")
    assert "(UTC)" in reply
