"""What the webhook route answers, logs and counts for WhatsApp, pinned: the route serves every
channel now, and none of this may change for the channel that was there first."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.conftest import MakeParley, Parley
from tests.factories import (
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    body_bytes,
    signed_headers,
    whatsapp_texts,
)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def accepted_count() -> float:
    value = REGISTRY.get_sample_value("parley_webhook_messages_total", {"channel": "whatsapp"})
    return value or 0.0


async def test_handshake_refusal(parley: Parley) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"}
    with capture_logs() as logs:
        response = await parley.client.get("/webhooks/whatsapp", params=params)
    assert (response.status_code, response.text) == (403, "verification failed")
    assert response.headers["content-type"].startswith("text/plain")
    (refused,) = events(logs, "webhook.handshake_refused")
    assert refused["channel"] == "whatsapp" and refused["log_level"] == "warning"


async def test_handshake_answer_is_plain_text(parley: Parley) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "abc"}
    response = await parley.client.get("/webhooks/whatsapp", params=params)
    assert (response.status_code, response.text) == (200, "abc")
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("body", "headers", "status", "text", "event", "fields"),
    [
        (b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "invalid signature",
         "webhook.bad_signature", {}),
        (b"{}", {}, 401, "invalid signature", "webhook.bad_signature", {}),
        (b"[1]", None, 400, "invalid payload", "webhook.bad_payload",
         {"reason": "body is not a JSON object"}),
    ],
)  # fmt: skip
async def test_refused_posts(
    parley: Parley,
    body: bytes,
    headers: dict[str, str] | None,
    status: int,
    text: str,
    event: str,
    fields: dict[str, str],
) -> None:
    sent_headers = signed_headers(body) if headers is None else headers
    with capture_logs() as logs:
        response = await parley.client.post(
            "/webhooks/whatsapp", content=body, headers=sent_headers
        )
    assert (response.status_code, response.text) == (status, text)
    (entry,) = events(logs, event)
    assert entry["channel"] == "whatsapp" and entry["log_level"] == "warning"
    assert {key: entry[key] for key in fields} == fields
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]


async def test_without_an_app_secret_nothing_is_accepted(make_parley: MakeParley) -> None:
    parley = make_parley(meta_app_secret=None)
    body = body_bytes(whatsapp_texts("34600000081", ["hello"]))
    with capture_logs() as logs:
        response = await parley.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
    assert (response.status_code, response.text) == (401, "webhook signing is not configured")
    (entry,) = events(logs, "webhook.no_app_secret")
    assert entry["channel"] == "whatsapp" and entry["log_level"] == "error"


async def test_accepted_post_is_logged_at_the_ack_then_filed_and_counted(parley: Parley) -> None:
    before = accepted_count()
    body = body_bytes(whatsapp_texts("34600000082", ["one", "two"]))
    headers = {**signed_headers(body), "X-Request-ID": "contract-test-0001"}
    with capture_logs() as logs:
        response = await parley.client.post("/webhooks/whatsapp", content=body, headers=headers)
        assert (response.status_code, response.content) == (200, b"")
        assert response.headers["x-request-id"] == "contract-test-0001"
        (entry,) = events(logs, "webhook.received")
        assert {key: value for key, value in entry.items() if key != "log_level"} == {
            "event": "webhook.received",
            "channel": "whatsapp",
            "bytes": len(body),
            "correlation_id": "contract-test-0001",
        }
        await parley.wait_for_rows("SELECT count(*) FROM messages WHERE direction='in'", [(2,)])
        await parley.wait_for_rows("SELECT count(*) FROM inbox", [(0,)])
    # One `webhook.accepted` per message filed, with what an operator looks it up by.
    stored = await parley.rows(
        "SELECT channel_message_id, account_id, conversation_id FROM messages "
        "WHERE direction='in' ORDER BY sequence_no"
    )
    accepted = events(logs, "webhook.accepted")
    assert [
        (e["channel_message_id"], e["account_id"], e["conversation_id"]) for e in accepted
    ] == stored
    assert all(
        e["channel"] == "whatsapp"
        and e["correlation_id"] == "contract-test-0001"
        and e["account_external_id"] == PHONE_NUMBER_ID
        and e["log_level"] == "info"
        for e in accepted
    )
    (filed,) = events(logs, "webhook.filed")
    assert {key: value for key, value in filed.items() if key != "log_level"} == {
        "event": "webhook.filed",
        "channel": "whatsapp",
        "correlation_id": "contract-test-0001",
        "messages": 2,
        "statuses": 0,
        "statuses_applied": 0,
        "skipped": 0,
    }
    assert accepted_count() == before + 2
    # The id followed the messages from the webhook into the store.
    metas = await parley.rows("SELECT meta FROM messages WHERE direction='in'")
    assert all("contract-test-0001" in str(meta) for (meta,) in metas)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_channel_nobody_serves_is_not_found(parley: Parley, method: str) -> None:
    body = body_bytes(whatsapp_texts("34600000083", ["hello"]))
    response = await parley.client.request(
        method, "/webhooks/telegram", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]
