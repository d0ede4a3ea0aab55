"""The admin API: failed messages are visible and can be answered again."""

from __future__ import annotations

from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import ADMIN_TOKEN, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_a_failed_message_is_listed_and_answered_again_on_retry(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    openai_sim.fail_always(500, path="/v1/responses")
    body = body_bytes(whatsapp_texts("34600000081", ["please answer eventually"]))
    await parley.client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
    await graph_sim.wait_for_sends(1, timeout=15)
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='in'", [("failed",)])

    listed = await parley.client.get("/admin/messages/failed", headers=ADMIN)
    assert listed.status_code == 200
    (failed,) = listed.json()
    assert failed["text"] == "please answer eventually"
    assert "500" in failed["error"]

    openai_sim.clear_faults()
    retried = await parley.client.post(f"/admin/messages/{failed['id']}/retry", headers=ADMIN)
    assert retried.status_code == 202
    await graph_sim.wait_for_sends(2, timeout=10)
    assert graph_sim.texts_to("34600000081") == [
        parley.settings.parley_fallback_reply,
        "Echo: please answer eventually",
    ]
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='in'", [("answered",)])
    again = await parley.client.post(f"/admin/messages/{failed['id']}/retry", headers=ADMIN)
    assert again.status_code == 404


async def test_admin_paths_need_the_admin_token(parley: Parley) -> None:
    assert (await parley.client.get("/admin/messages/failed")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await parley.client.get("/admin/messages/failed", headers=wrong)).status_code == 401
    assert (await parley.client.post("/admin/messages/1/retry", headers=wrong)).status_code == 401
