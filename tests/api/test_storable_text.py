"""JSON bodies with text no store can hold, through the API doors (both backends): a ``\\u0000``
or lone ``\\ud800`` escape is stored as U+FFFD and the request completes, never stuck or 5xx."""

from __future__ import annotations

import pytest

from parley.testing import GraphSimulator
from tests.api.test_handoff import ADMIN, conversation_of, say, wait_for_texts
from tests.api.test_responses import new_token
from tests.conftest import Parley, Store

FFFD = "\ufffd"


@pytest.fixture
async def token(store: Store) -> str:
    return await new_token(store, "alice")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("escaped", "stored"),
    [
        ("nul \\u0000 here", f"nul {FFFD} here"),
        ("lone \\ud800 here", f"lone {FFFD} here"),
        ("low \\udfff and \\u0000", f"low {FFFD} and {FFFD}"),
        ("pair \\ud83d\\ude00 kept", "pair \U0001f600 kept"),
    ],
)
async def test_responses_input_with_unstorable_text_completes_cleaned(
    parley: Parley, token: str, escaped: str, stored: str
) -> None:
    body = '{"model": "default", "input": "' + escaped + '"}'
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["status"] == "completed"
    assert await parley.rows("SELECT status FROM responses WHERE id = ?", answer.json()["id"]) == [
        ("completed",)
    ]
    assert (stored,) in await parley.rows("SELECT text FROM messages WHERE direction = 'in'")


async def test_background_input_with_unstorable_text_is_not_stuck(
    parley: Parley, token: str
) -> None:
    body = '{"model": "default", "background": true, "input": "a \\u0000 b \\ud800"}'
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text[:300]
    response_id = answer.json()["id"]
    await parley.wait_for_rows(
        f"SELECT status FROM responses WHERE id = '{response_id}'", [("completed",)]
    )
    assert (f"a {FFFD} b {FFFD}",) in await parley.rows(
        "SELECT text FROM messages WHERE direction = 'in'"
    )


async def test_an_operator_reply_with_unstorable_text_is_sent_cleaned(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    phone = "34600000601"
    await say(parley, phone, "hi")
    await wait_for_texts(graph_sim, phone, 1)
    conversation_id = await conversation_of(parley, phone)
    taken = await parley.client.post(
        f"/admin/conversations/{conversation_id}/takeover", headers=ADMIN
    )
    assert taken.status_code == 200, taken.text
    reply = await parley.client.post(
        f"/admin/conversations/{conversation_id}/messages",
        content='{"text": "from a person \\u0000 \\ud800"}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert reply.status_code == 202, reply.text
    texts = await wait_for_texts(graph_sim, phone, 2)
    assert texts[-1] == f"from a person {FFFD} {FFFD}"
    assert (f"from a person {FFFD} {FFFD}",) in await parley.rows(
        "SELECT text FROM messages WHERE direction = 'out'"
    )


async def test_a_body_that_is_not_json_is_still_refused(parley: Parley, token: str) -> None:
    body = '{"model": "default", "input": "\\u0000'  # cut short
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 400, answer.text[:300]
