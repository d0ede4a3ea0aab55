"""Several WhatsApp numbers on one Parley, end to end: each answered with its own prompt and
its own token, webhooks checked with each account's own app secret, and a number Parley was
not told about stored and logged but never answered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from parley.channels.signature import sign
from parley.testing import GraphSimulator, OpenAISimulator
from tests.api.test_admin import ADMIN
from tests.conftest import WHATSAPP_TOKEN, MakeParley, Parley
from tests.factories import APP_SECRET, VERIFY_TOKEN, body_bytes, whatsapp_texts

SECRET_KEY = "test-parley-secret-key"
SHOP_A = "201000000000001"
SHOP_B = "201000000000002"
STRANGER = "201000000000099"
TOKEN_A = "EAAG-token-of-shop-a"
TOKEN_B = "EAAG-token-of-shop-b"
APP_SECRET_A = "app-secret-of-shop-a"
VERIFY_TOKEN_A = "verify-token-of-shop-a"
SECRETS = (TOKEN_A, TOKEN_B, APP_SECRET_A, VERIFY_TOKEN_A)


@pytest.fixture
def parley(make_parley: MakeParley) -> Parley:
    return make_parley(parley_secret_key=SecretStr(SECRET_KEY))


async def admin(parley: Parley, method: str, path: str, body: Any = None) -> Any:
    response = await parley.client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def post(parley: Parley, account: str, phone: str, text: str, secret: str) -> int:
    body = body_bytes(whatsapp_texts(phone, [text], phone_number_id=account))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}
    response = await parley.client.post("/webhooks/whatsapp", content=body, headers=headers)
    return response.status_code


async def two_shops(parley: Parley) -> tuple[int, int]:
    """Shop A with its own token and Meta app; shop B with its own token on the default app;
    each with a prompt of its own."""
    a = await admin(
        parley,
        "POST",
        "/admin/accounts",
        {
            "channel": "whatsapp",
            "external_id": SHOP_A,
            "name": "Shop A",
            "access_token": TOKEN_A,
            "app_secret": APP_SECRET_A,
            "verify_token": VERIFY_TOKEN_A,
        },
    )
    b = await admin(
        parley,
        "POST",
        "/admin/accounts",
        {"channel": "whatsapp", "external_id": SHOP_B, "access_token": TOKEN_B},
    )
    for name, account in (("shop-a", a), ("shop-b", b)):
        await admin(
            parley,
            "POST",
            "/admin/prompts",
            {"name": name, "instructions": f"You answer for {name} ({{{{account}}}})."},
        )
        await admin(parley, "PUT", f"/admin/accounts/{account['id']}/prompt", {"prompt": name})
    return a["id"], b["id"]


def instructions_by_input(openai_sim: OpenAISimulator) -> dict[str, str]:
    found = {}
    for request in openai_sim.response_requests:
        said = json.dumps(request.json["input"])
        for text in ("hello shop a", "hello shop b"):
            if text in said:
                found[text] = request.json["instructions"]
    return found


async def test_each_account_is_answered_with_its_own_prompt_and_token(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await two_shops(parley)
    with capture_logs() as logs:
        assert await post(parley, SHOP_A, "34600000901", "hello shop a", APP_SECRET_A) == 200
        assert await post(parley, SHOP_B, "34600000902", "hello shop b", APP_SECRET) == 200
        await graph_sim.wait_for_sends(2, timeout=10)

    tokens = {send.path: send.headers["authorization"] for send in graph_sim.sends}
    assert tokens == {
        f"/v26.0/{SHOP_A}/messages": f"Bearer {TOKEN_A}",
        f"/v26.0/{SHOP_B}/messages": f"Bearer {TOKEN_B}",
    }
    receipts = {r.path: r.headers["authorization"] for r in graph_sim.receipts}
    assert receipts[f"/v26.0/{SHOP_A}/messages"] == f"Bearer {TOKEN_A}"
    assert instructions_by_input(openai_sim) == {
        "hello shop a": "You answer for shop-a (Shop A).",
        "hello shop b": f"You answer for shop-b ({SHOP_B}).",
    }
    assert graph_sim.texts_to("34600000901") == ["Echo: hello shop a"]
    logged = repr(logs)
    assert not [secret for secret in SECRETS if secret in logged]


async def test_a_body_signed_by_another_app_is_refused(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    await two_shops(parley)
    with capture_logs() as logs:
        # Shop A's webhooks come signed by its own app; the default secret cannot speak for it,
        # nor can shop A's secret speak for shop B.
        assert await post(parley, SHOP_A, "34600000903", "forged", APP_SECRET) == 401
        assert await post(parley, SHOP_B, "34600000904", "forged", APP_SECRET_A) == 401
        assert await post(parley, SHOP_A, "34600000903", "forged", "nobody's secret") == 401
    wrong = [e for e in logs if e["event"] == "webhook.wrong_app_secret"]
    assert [e["accounts"] for e in wrong] == [[SHOP_A], [SHOP_B]]
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]

    # An account's own verify token answers the handshake too; a wrong one does not.
    for token, status in ((VERIFY_TOKEN_A, 200), (VERIFY_TOKEN, 200), ("wrong", 403)):
        params = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"}
        response = await parley.client.get("/webhooks/whatsapp", params=params)
        assert response.status_code == status


async def test_an_unknown_number_is_stored_and_logged_never_answered(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await two_shops(parley)
    with capture_logs() as logs:
        assert await post(parley, STRANGER, "34600000905", "who answers me?", APP_SECRET) == 200
        assert await post(parley, SHOP_A, "34600000906", "hello shop a", APP_SECRET_A) == 200
        await graph_sim.wait_for_sends(1, timeout=10)
        # The stranger's turn is done once its message is filed as ignored, with the reason;
        # the filer logged the stranger before that.
        await parley.wait_for_rows(
            "SELECT m.status, m.error, m.text FROM messages m"
            " JOIN accounts a ON a.id = m.account_id"
            f" WHERE a.external_id = '{STRANGER}'",
            [("ignored", "account not configured", "who answers me?")],
        )
    (warning,) = [e for e in logs if e["event"] == "webhook.unknown_account"]
    assert warning["account_external_id"] == STRANGER and warning["log_level"] == "warning"
    assert [r.path for r in graph_sim.requests] == [f"/v26.0/{SHOP_A}/messages"] * 2
    assert all(r.headers["authorization"] == f"Bearer {TOKEN_A}" for r in graph_sim.requests)
    assert len(openai_sim.response_requests) == 1


async def test_disabled_and_removed_accounts_are_stored_not_answered(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    a, b = await two_shops(parley)
    await admin(parley, "PATCH", f"/admin/accounts/{a}", {"enabled": False})
    await admin(parley, "DELETE", f"/admin/accounts/{b}")
    assert await post(parley, SHOP_A, "34600000907", "anyone?", APP_SECRET_A) == 200
    # Removed, shop B's own secret is gone: its webhooks are checked with the default again.
    assert await post(parley, SHOP_B, "34600000908", "anyone?", APP_SECRET) == 200
    await parley.wait_for_rows(
        "SELECT a.external_id, m.status, m.error FROM messages m"
        " JOIN accounts a ON a.id = m.account_id ORDER BY a.external_id",
        [(SHOP_A, "ignored", "account disabled"), (SHOP_B, "ignored", "account removed")],
    )
    assert graph_sim.requests == [] and openai_sim.response_requests == []

    # Enabled again, the next message is answered, with the account's own token.
    await admin(parley, "PATCH", f"/admin/accounts/{a}", {"enabled": True})
    assert await post(parley, SHOP_A, "34600000907", "now?", APP_SECRET_A) == 200
    (send,) = await graph_sim.wait_for_sends(1, timeout=10)
    assert send.headers["authorization"] == f"Bearer {TOKEN_A}"


async def test_an_account_without_a_token_sends_with_the_environment_s(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    await admin(parley, "POST", "/admin/accounts", {"channel": "whatsapp", "external_id": SHOP_B})
    assert await post(parley, SHOP_B, "34600000909", "hi", APP_SECRET) == 200
    (send,) = await graph_sim.wait_for_sends(1, timeout=10)
    assert send.headers["authorization"] == f"Bearer {WHATSAPP_TOKEN}"


async def test_an_account_s_profile_and_model_choose_its_prompt(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await admin(
        parley,
        "POST",
        "/admin/accounts",
        {"channel": "whatsapp", "external_id": SHOP_A, "profile": "sales", "model": "gpt-5-nano"},
    )
    await admin(parley, "POST", "/admin/prompts", {"name": "sales", "instructions": "Sell."})
    await admin(parley, "PUT", "/admin/profiles/sales", {"prompt": "sales"})
    assert await post(parley, SHOP_A, "34600000910", "hi", APP_SECRET) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    (request,) = openai_sim.response_requests
    assert (request.json["instructions"], request.json["model"]) == ("Sell.", "gpt-5-nano")
