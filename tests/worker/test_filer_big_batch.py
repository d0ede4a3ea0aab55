"""A webhook carrying a thousand messages, end to end (both backends): acknowledged, filed in
chunks while `/readyz` keeps answering 200, every message stored once in its customer's order
and answered once."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter

from parley.testing import GraphSimulator, OpenAISimulator, SimTurn
from tests.conftest import MakeParley, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_batch

PHONES = [f"3461000{n:04d}" for n in range(20)]
TEXTS = [f"hello mk{n}x" for n in range(1000)]
MARK = re.compile(r"\bmk(\d+)x\b")


def every_text(turn: SimTurn) -> str:
    """Every user text of the turn, so that a turn answering a burst answers each message."""
    return "Re: " + " | ".join(turn.user_texts)


async def poll_readyz(
    parley: Parley, statuses: list[int], stop: asyncio.Event, refusals: list[str]
) -> None:
    while not stop.is_set():
        answer = await parley.client.get("/readyz")
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            refusals.append(answer.text)  # which check, and why: said by the assertion
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.05)


def answers(graph_sim: GraphSimulator) -> Counter[int]:
    return Counter(
        int(n) for send in graph_sim.sends for n in MARK.findall(str(send.json.get("text")))
    )


async def test_a_thousand_message_body_is_filed_in_chunks_while_readyz_answers(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.reply = every_text
    # Customers of a benchmark write faster than people: the per-customer limit is lifted, so
    # that every message gets an answer and not a notice.
    parley = make_parley(parley_customer_messages_per_minute=1_000_000, parley_filer_chunk=50)
    body = body_bytes(whatsapp_batch(PHONES, TEXTS))
    statuses: list[int] = []
    refusals: list[str] = []
    stop = asyncio.Event()
    polling = asyncio.create_task(poll_readyz(parley, statuses, stop, refusals))
    try:
        answer = await parley.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
        assert answer.status_code == 200
        await parley.wait_filed(timeout=120)
    finally:
        stop.set()
        await polling

    assert statuses and set(statuses) == {200}, refusals
    stored = await parley.rows(
        "SELECT c.external_id, m.text FROM messages m "
        "JOIN conversations v ON v.id = m.conversation_id JOIN contacts c ON c.id = v.contact_id "
        "WHERE m.direction = 'in' ORDER BY m.conversation_id, m.sequence_no"
    )
    by_customer: dict[str, list[str]] = {}
    for phone, text in stored:
        by_customer.setdefault(phone, []).append(text)
    assert by_customer == {phone: TEXTS[i :: len(PHONES)] for i, phone in enumerate(PHONES)}

    deadline = asyncio.get_running_loop().time() + 120
    while len(answered := answers(graph_sim)) < len(TEXTS):
        assert asyncio.get_running_loop().time() < deadline, f"{len(answered)} answered"
        await asyncio.sleep(0.1)
    assert set(answered) == set(range(len(TEXTS)))
    assert max(answered.values()) == 1
