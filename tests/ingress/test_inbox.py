"""Accept, then file, end to end on both backends: concurrent webhooks share commits, every
one is answered once, and a signed body the channel cannot read is kept for audit."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from parley.testing import GraphSimulator
from tests.conftest import Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts


def inbox_commits() -> float:
    return REGISTRY.get_sample_value("parley_inbox_commits_total") or 0.0


async def post(parley: Parley, body: bytes) -> int:
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    return response.status_code


async def test_concurrent_webhooks_share_commits_and_each_is_answered_once(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    phones = [f"3460001{i:04d}" for i in range(64)]
    bodies = [body_bytes(whatsapp_texts(phone, [f"hello {phone}"])) for phone in phones]
    before = inbox_commits()

    statuses = await asyncio.gather(*(post(parley, body) for body in bodies))

    assert statuses == [200] * len(bodies)
    commits = inbox_commits() - before
    assert 1 <= commits < len(bodies)
    await graph_sim.wait_for_sends(len(phones), timeout=30)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='answered'", [(64,)]
    )
    await asyncio.sleep(0.3)  # a second, wrong send would show up here
    for phone in phones:
        assert graph_sim.texts_to(phone) == [f"Echo: hello {phone}"]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]


async def test_a_signed_object_the_channel_cannot_read_is_kept_and_the_others_filed(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    good = [body_bytes(whatsapp_texts(f"3460002{i:04d}", ["hi"])) for i in range(4)]
    bad = b'{"object": "page", "entry": "not a list"}'

    statuses = await asyncio.gather(*(post(parley, body) for body in [*good[:2], bad, *good[2:]]))

    assert statuses == [200] * 5  # signed and a JSON object: acknowledged, then judged
    await graph_sim.wait_for_sends(4, timeout=15)
    await parley.wait_filed()
    ((body, error, failed),) = await parley.rows(
        "SELECT body, error, failed_at IS NOT NULL FROM inbox"
    )
    assert bytes(body) == bad and failed
    assert "BadPayload" in error
    assert await parley.rows("SELECT count(*) FROM messages WHERE direction='in'") == [(4,)]
