"""Prompts kept by Parley, end to end: a WhatsApp message in, the active version's model,
settings and filled-in instructions upstream, and the version recorded on the answer; rollback,
the A/B split with its report, and the fallback from a dashboard prompt the upstream lost."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from parley.agent.prompts import ab_bucket
from parley.testing import GraphSimulator, OpenAISimulator, SimTurn
from tests.api.test_admin import ADMIN
from tests.api.test_responses import new_token, sdk
from tests.conftest import MakeParley, Parley, Store
from tests.factories import body_bytes, signed_headers, whatsapp_texts

INSTRUCTIONS = "Help {{customer_name}} on {{channel}} ({{account}}). Now: {{local_time}}."


async def say(parley: Parley, phone: str, text: str, name: str = "Ana") -> None:
    body = body_bytes(whatsapp_texts(phone, [text], name=name))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


async def admin(parley: Parley, method: str, path: str, body: Any = None) -> Any:
    response = await parley.client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def make_prompt(parley: Parley) -> None:
    """`support` v1 (gpt-5-nano, temperature 0.2) and v2 (terser), v1 active for `default`."""
    await admin(
        parley,
        "POST",
        "/admin/prompts",
        {
            "name": "support",
            "instructions": INSTRUCTIONS,
            "model": "gpt-5-nano",
            "settings": {"temperature": 0.2},
        },
    )
    await admin(
        parley,
        "POST",
        "/admin/prompts/support/versions",
        {"instructions": "Be terse with {{customer_name}}.", "note": "terser"},
    )
    await admin(parley, "PUT", "/admin/profiles/default", {"prompt": "support", "version": 1})


def last_request(sim: OpenAISimulator) -> dict[str, Any]:
    return sim.response_requests[-1].json


@pytest.fixture
def madrid(make_parley: MakeParley) -> Parley:
    return make_parley(parley_timezone="Europe/Madrid")


async def test_the_active_version_answers_and_is_recorded_then_rollback_switches(
    madrid: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = madrid
    await make_prompt(parley)
    await say(parley, "34600000701", "hello", name="Lucía")
    await graph_sim.wait_for_sends(1, timeout=10)

    sent = last_request(openai_sim)
    assert sent["model"] == "gpt-5-nano" and sent["temperature"] == 0.2
    assert re.fullmatch(
        r"Help Lucía on whatsapp \(106540352242922\)\. "
        r"Now: \d{4}-\d\d-\d\d \d\d:\d\d \(Europe/Madrid\)\.",
        sent["instructions"],
    ), sent["instructions"]
    rows = await parley.rows(
        "SELECT m.meta, m.prompt_version_id, v.version, m.model FROM messages m"
        " JOIN prompt_versions v ON v.id = m.prompt_version_id WHERE m.sender = 'agent'"
    )
    ((meta, _, version, model),) = rows
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert meta["prompt"] == {"name": "support", "version": 1} and version == 1
    assert model == "gpt-5-nano"

    # Version 2 goes live, then is rolled back: each next turn follows at once.
    await admin(parley, "PUT", "/admin/profiles/default", {"prompt": "support", "version": 2})
    await say(parley, "34600000701", "again", name="Lucía")
    await graph_sim.wait_for_sends(2, timeout=10)
    assert last_request(openai_sim)["instructions"] == "Be terse with Lucía."
    assert last_request(openai_sim)["model"] == "gpt-5-mini"  # v2 names none: OPENAI_MODEL
    rolled = await admin(parley, "POST", "/admin/profiles/default/rollback")
    assert (rolled["prompt"], rolled["version"]) == ("support", 1)
    await say(parley, "34600000701", "and again", name="Lucía")
    await graph_sim.wait_for_sends(3, timeout=10)
    assert last_request(openai_sim)["instructions"].startswith("Help Lucía on whatsapp")
    await parley.wait_for_rows(
        "SELECT v.version FROM messages m JOIN prompt_versions v ON v.id = m.prompt_version_id"
        " WHERE m.sender = 'agent' ORDER BY m.sequence_no",
        [(1,), (2,), (1,)],
    )


def handoff_when_asked(turn: SimTurn) -> list[dict[str, Any]] | None:
    said = turn.user_texts[-1] if turn.user_texts else ""
    if "human" in said:
        return [{"name": "handoff_to_human", "arguments": {"reason": "asked"}}]
    return None


async def test_ab_split_is_sticky_and_reported_per_version(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await make_prompt(parley)
    started = await admin(
        parley,
        "PUT",
        "/admin/profiles/default/ab",
        {"prompt": "support", "version": 2, "percent": 30},
    )
    assert (started["candidate_version"], started["candidate_percent"]) == (2, 30)
    phones = [f"3460000072{n}" for n in range(8)]
    for number, phone in enumerate(phones, start=1):
        await say(parley, phone, "first")
        await graph_sim.wait_for_sends(number, timeout=10)
    ids = {
        phone: cid
        for cid, phone in await parley.rows(
            "SELECT c.id, k.phone FROM conversations c JOIN contacts k ON k.id = c.contact_id"
        )
    }
    expected = {p: 2 if ab_bucket(ids[p]) < 30 else 1 for p in phones}
    assert set(expected.values()) == {1, 2}  # both sides have conversations

    # The split moves; the conversations keep their side. One customer asks for a human.
    await admin(
        parley,
        "PUT",
        "/admin/profiles/default/ab",
        {"prompt": "support", "version": 2, "percent": 100},
    )
    openai_sim.tool_calls = handoff_when_asked
    human = next(p for p in phones if expected[p] == 2)
    for number, phone in enumerate(phones, start=len(phones) + 1):
        await say(parley, phone, "I want a human" if phone == human else "second")
        await graph_sim.wait_for_sends(number, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE sender = 'agent'", [(2 * len(phones),)]
    )
    versions = await parley.rows(
        "SELECT k.phone, v.version FROM messages m JOIN prompt_versions v"
        " ON v.id = m.prompt_version_id JOIN conversations c ON c.id = m.conversation_id"
        " JOIN contacts k ON k.id = c.contact_id WHERE m.sender = 'agent'"
    )
    assert sorted(versions) == sorted((p, expected[p]) for p in phones for _ in range(2))

    report = {r["version"]: r for r in await admin(parley, "GET", "/admin/prompts/report")}
    answers = await parley.rows(
        "SELECT v.version, m.input_tokens, m.output_tokens, m.cost_usd FROM messages m"
        " JOIN prompt_versions v ON v.id = m.prompt_version_id WHERE m.sender = 'agent'"
    )
    for version in (1, 2):
        mine = [a for a in answers if a[0] == version]
        row, side = report[version], sum(1 for p in phones if expected[p] == version)
        assert row["messages"] == len(mine) == 2 * side
        assert row["input_tokens"] == sum(a[1] for a in mine)
        assert row["output_tokens"] == sum(a[2] for a in mine)
        assert Decimal(row["cost_usd"]) == sum(Decimal(str(a[3])) for a in mine) > 0
        assert row["avg_latency_ms"] is not None
        assert row["conversations"] == side
        assert row["handoffs"] == (1 if version == 2 else 0)
        assert row["handoff_rate"] == pytest.approx(row["handoffs"] / side)
    assert await admin(parley, "GET", "/admin/prompts/report?prompt=other") == []


async def test_a_lost_dashboard_prompt_falls_back_to_the_local_version(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.prompts = {"pmpt_live": ["1"]}
    parley = make_parley(openai_prompt_id="pmpt_retired", openai_prompt_version="3")
    await make_prompt(parley)
    await say(parley, "34600000741", "are you there?")
    await graph_sim.wait_for_sends(1, timeout=10)

    assert graph_sim.texts_to("34600000741") == ["Echo: are you there?"]
    asked, answered = [r.json for r in openai_sim.response_requests]
    assert asked["prompt"]["id"] == "pmpt_retired" and asked["prompt"]["version"] == "3"
    assert asked["prompt"]["variables"]["customer_name"] == "Ana"
    assert "model" not in asked and "instructions" not in asked
    assert "prompt" not in answered
    assert answered["model"] == "gpt-5-nano"
    assert answered["instructions"].startswith("Help Ana on whatsapp")
    rows = await parley.rows("SELECT meta FROM messages WHERE sender = 'agent'")
    meta = rows[0][0] if isinstance(rows[0][0], dict) else json.loads(rows[0][0])
    assert meta["prompt"] == {"name": "support", "version": 1}

    # The next turn does not ask for the lost prompt again.
    await say(parley, "34600000741", "still there?")
    await graph_sim.wait_for_sends(2, timeout=10)
    assert "prompt" not in last_request(openai_sim) and len(openai_sim.response_requests) == 3


async def test_a_live_dashboard_prompt_gets_the_variables(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.prompts = {"pmpt_live": ["1"]}
    parley = make_parley(openai_prompt_id="pmpt_live")
    await say(parley, "34600000751", "hi")
    await graph_sim.wait_for_sends(1, timeout=10)
    (sent,) = [r.json for r in openai_sim.response_requests]
    assert sent["prompt"]["id"] == "pmpt_live" and "instructions" not in sent
    assert set(sent["prompt"]["variables"]) == {"customer_name", "channel", "account", "local_time"}
    rows = await parley.rows("SELECT meta, prompt_version_id FROM messages WHERE sender = 'agent'")
    meta = rows[0][0] if isinstance(rows[0][0], dict) else json.loads(rows[0][0])
    assert meta["prompt"] == {"id": "pmpt_live"} and rows[0][1] is None


async def test_responses_api_threads_get_the_bound_prompt_and_their_ab_side(
    parley: Parley, openai_sim: OpenAISimulator, store: Store
) -> None:
    """A thread the Responses API starts is given its side of the split in the transaction
    that stores it (on SQLite a thread without a binding takes a shorter path, which must not
    be taken here), and its next response keeps that side."""
    await make_prompt(parley)
    await admin(
        parley,
        "PUT",
        "/admin/profiles/default/ab",
        {"prompt": "support", "version": 2, "percent": 30},
    )
    client = sdk(parley, await new_token(store, "bea"))
    first = [await client.responses.create(model="default", input=f"hi {n}") for n in range(8)]
    sent = [request.json for request in openai_sim.response_requests[-8:]]

    sides = dict(
        await parley.rows(
            "SELECT r.id, v.version FROM responses r JOIN conversations c"
            " ON c.id = r.conversation_id JOIN prompt_versions v ON v.id = c.prompt_version_id"
        )
    )
    ids = dict(await parley.rows("SELECT id, conversation_id FROM responses"))
    expected = {r.id: 2 if ab_bucket(ids[r.id]) < 30 else 1 for r in first}
    assert sides == expected and set(expected.values()) == {1, 2}
    for response, request in zip(first, sent, strict=True):
        terse = request["instructions"] == "Be terse with bea."
        assert terse == (expected[response.id] == 2), request["instructions"]

    # The split moves to all of the candidate; a thread that had version 1 keeps it.
    await admin(
        parley,
        "PUT",
        "/admin/profiles/default/ab",
        {"prompt": "support", "version": 2, "percent": 100},
    )
    kept = next(r for r in first if expected[r.id] == 1)
    await client.responses.create(model="default", input="again", previous_response_id=kept.id)
    assert last_request(openai_sim)["instructions"].startswith("Help bea on api")
    await client.close()
