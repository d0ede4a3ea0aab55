"""Send discipline end to end: a running Parley, the Graph simulator refusing sends or reporting
them failed later, the store read as an auditor would. Each Graph error class, both ways."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from parley.channels.graph_errors import READABLE
from parley.errors import FailureKind
from parley.store.models import Contact, Conversation, Message, utcnow
from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import MakeParley, Parley
from tests.factories import APP_SECRET, body_bytes, signed_headers, whatsapp_texts

WAIT = 15.0
LATE = 0.25
"""The most a send may reach Meta after its pacing slot (a busy test machine)."""


async def post(parley: Parley, payload: dict[str, Any]) -> None:
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


async def replies(parley: Parley, phone: str) -> list[tuple[Any, ...]]:
    """The customer's outbound messages: status, error, channel message id."""
    return await parley.rows(
        "SELECT m.status, m.error, m.channel_message_id FROM messages m"
        " JOIN conversations v ON v.id = m.conversation_id"
        " JOIN contacts c ON c.id = v.contact_id"
        " WHERE c.phone = ? AND m.direction = 'out' ORDER BY m.id",
        phone,
    )


async def wait_for_reply(
    parley: Parley, phone: str, status: str, timeout: float = WAIT, error: str | None = None
) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await replies(parley, phone)
        if rows and rows[0][0] == status and (error is None or error in (rows[0][1] or "")):
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"reply to {phone}: {rows!r}, expected {status} ({error})")
        await asyncio.sleep(0.05)


async def outbox_empty(parley: Parley) -> None:
    await parley.wait_for_rows("SELECT count(*) FROM outbox", [(0,)], timeout=WAIT)


# --- in the send's answer -----------------------------------------------------------------

RETRIED = [
    pytest.param(400, 130429, {}, id="130429-throughput"),
    pytest.param(400, 131000, {}, id="131000-unknown"),
    pytest.param(500, 2, {}, id="2-temporary"),
    pytest.param(400, 4, {}, id="4-app-rate"),
    pytest.param(502, 1, {}, id="5xx"),
]
FINAL = [
    pytest.param(400, 131047, {}, FailureKind.WINDOW_CLOSED, id="131047-window"),
    pytest.param(
        400, 10, {"error_subcode": 2018109}, FailureKind.WINDOW_CLOSED, id="10/2018109-window"
    ),
    pytest.param(400, 131026, {}, FailureKind.UNDELIVERABLE, id="131026-undeliverable"),
    pytest.param(400, 551, {}, FailureKind.UNDELIVERABLE, id="551-unavailable"),
    pytest.param(400, 131030, {}, FailureKind.INVALID_RECIPIENT, id="131030-not-allowed"),
    pytest.param(
        400, 100, {"error_subcode": 2018001}, FailureKind.INVALID_RECIPIENT, id="100-no-user"
    ),
]


@pytest.mark.parametrize(("status", "code", "fields"), RETRIED)
async def test_a_retryable_refusal_is_sent_again(
    parley: Parley, graph_sim: GraphSimulator, status: int, code: int, fields: dict[str, Any]
) -> None:
    phone = "34611000001"
    graph_sim.fail_sends(status, code, **fields)
    await post(parley, whatsapp_texts(phone, ["try again"]))
    await wait_for_reply(parley, phone, "sent")
    attempts = graph_sim.attempts_to(phone)
    assert [r.status for r in attempts] == [status, 200]
    assert graph_sim.texts_to(phone) == ["Echo: try again"]


@pytest.mark.parametrize(("status", "code", "fields", "kind"), FINAL)
async def test_a_final_refusal_is_failed_with_a_readable_reason(
    parley: Parley,
    graph_sim: GraphSimulator,
    status: int,
    code: int,
    fields: dict[str, Any],
    kind: FailureKind,
) -> None:
    phone = "34611000002"
    graph_sim.fail_sends(status, code, **fields)
    await post(parley, whatsapp_texts(phone, ["hello"]))
    _, error, _ = await wait_for_reply(parley, phone, "failed")
    assert error.startswith(READABLE[kind])
    assert str(code) in error
    await outbox_empty(parley)
    assert len(graph_sim.attempts_to(phone)) == 1  # never tried again


async def test_a_pair_rate_refusal_holds_only_that_customer(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    slow, other = "34611000003", "34611000004"
    graph_sim.fail_sends(400, 131056)
    await post(parley, whatsapp_texts(slow, ["first"]))
    await graph_sim.wait_until(lambda: graph_sim.attempts_to(slow), 1, WAIT, "a refused send")
    await post(parley, whatsapp_texts(other, ["second"]))
    await wait_for_reply(parley, other, "sent")
    _, error, _ = await wait_for_reply(parley, slow, "sent", timeout=WAIT)
    other_sent = graph_sim.attempts_to(other)[-1].time
    slow_sent = graph_sim.attempts_to(slow)[-1].time
    assert other_sent < slow_sent  # the other customer did not wait behind the pair rate
    assert slow_sent - graph_sim.attempts_to(slow)[0].time >= 3.5  # Meta's 4^n s backoff
    assert "too many messages to this customer" in error


# --- as a failed status, later -----------------------------------------------------------

RETRIED_CODES = [130429, 131000, 2, 4]
FINAL_CODES = [
    pytest.param(131047, FailureKind.WINDOW_CLOSED, id="131047-window"),
    pytest.param(131026, FailureKind.UNDELIVERABLE, id="131026-undeliverable"),
    pytest.param(131030, FailureKind.INVALID_RECIPIENT, id="131030-not-allowed"),
    pytest.param(131049, FailureKind.REJECTED, id="131049-ecosystem"),
]


@pytest.mark.parametrize("code", RETRIED_CODES)
async def test_a_retryable_failed_status_is_sent_again_once(
    parley: Parley, graph_sim: GraphSimulator, code: int
) -> None:
    phone = "34611000005"
    graph_sim.fail_later(code)
    await post(parley, whatsapp_texts(phone, ["are you there"]))
    _, _, first_id = await wait_for_reply(parley, phone, "sent")
    assert graph_sim.failed_later == [first_id]

    reports = graph_sim.pending_statuses
    assert await graph_sim.deliver_statuses(
        f"{parley.server.url}/webhooks/whatsapp", APP_SECRET
    ) == [200]
    await post(parley, reports[0])  # Meta re-delivers webhooks: still one new send
    await graph_sim.wait_for_sends(2, timeout=WAIT)
    _status, _, second_id = await wait_for_reply(parley, phone, "sent")
    assert second_id not in (None, first_id)
    await post(parley, reports[0])  # a report of the old send, after the new one went out
    await outbox_empty(parley)
    assert graph_sim.texts_to(phone) == ["Echo: are you there"] * 2
    assert (await replies(parley, phone))[0][:1] == ("sent",)


@pytest.mark.parametrize(("code", "kind"), FINAL_CODES)
async def test_a_final_failed_status_stays_failed_with_a_readable_reason(
    parley: Parley, graph_sim: GraphSimulator, code: int, kind: FailureKind
) -> None:
    phone = "34611000006"
    graph_sim.fail_later(code, details="Details from Meta.")
    await post(parley, whatsapp_texts(phone, ["hello"]))
    await wait_for_reply(parley, phone, "sent")
    await graph_sim.deliver_statuses(f"{parley.server.url}/webhooks/whatsapp", APP_SECRET)
    _, error, _ = await wait_for_reply(parley, phone, "failed", error=READABLE[kind])
    assert str(code) in error and "Details from Meta." in error
    await outbox_empty(parley)
    assert len(graph_sim.attempts_to(phone)) == 1


# --- the token, the window, the rate -----------------------------------------------------


async def test_an_expired_token_is_logged_once_and_replies_wait_for_a_new_one(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    phones = [f"3461100010{n}" for n in range(4)]
    graph_sim.fail_sends(401, 190, times=None)
    with capture_logs() as logs:
        for phone in phones:
            await post(parley, whatsapp_texts(phone, [f"hi from {phone}"]))
        for phone in phones:
            await wait_for_reply(parley, phone, "queued", error="held until the token")
        # Every reply was refused at least once (and some more than once, by now).
        assert all(graph_sim.attempts_to(phone) for phone in phones)
        graph_sim.clear_send_faults()
        for phone in phones:
            await wait_for_reply(parley, phone, "sent")
    alarms = [entry for entry in logs if entry["event"] == "delivery.token_rejected"]
    assert len(alarms) == 1
    assert alarms[0]["log_level"] == "error"
    assert alarms[0]["account_external_id"]
    assert not [entry for entry in logs if entry["event"] in ("delivery.failed", "delivery.retry")]
    assert [e["event"] for e in logs].count("delivery.token_accepted_again") == 1


async def test_outside_the_24_hour_window_the_reply_is_not_sent(
    parley: Parley, graph_sim: GraphSimulator, openai_sim: OpenAISimulator
) -> None:
    phone = "34611000007"
    openai_sim.latency = 1.0  # time to age the customer's message while the turn runs
    await post(parley, whatsapp_texts(phone, ["still there?"]))
    conversation = (
        select(Conversation.id).join(Contact, Contact.id == Conversation.contact_id)
    ).where(Contact.phone == phone)
    async with parley.store.engine.begin() as connection:
        for _ in range(100):
            if (await connection.execute(conversation)).first():
                break
            await asyncio.sleep(0.02)
        await connection.execute(
            update(Message)
            .where(Message.conversation_id.in_(conversation), Message.direction == "in")
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    _, error, _ = await wait_for_reply(parley, phone, "failed")
    assert "outside the customer-service window" in error
    assert "25 h ago" in error
    await outbox_empty(parley)
    assert graph_sim.attempts_to(phone) == []


async def test_sends_are_spread_at_the_accounts_rate(
    make_parley: MakeParley, graph_sim: GraphSimulator
) -> None:
    rate, customers = 5.0, 10
    # Meta's throughput check, above Parley's rate by the lateness tolerated below: k + 1
    # sends paced at `rate` span k / rate seconds of slots, so they fall within the check's
    # one second only if the first came more than k / rate - 1 late. With k = rate + 1 that
    # was 0.2 s, less than LATE, and a busy CI machine once got there.
    graph_sim.send_rate = math.ceil(rate * (1 + LATE))
    parley = make_parley(parley_whatsapp_send_rate=rate)
    phones = [f"346120000{n:02d}" for n in range(customers)]
    for phone in phones:
        await post(parley, whatsapp_texts(phone, ["quick"]))
    sends = await graph_sim.wait_for_sends(customers, timeout=WAIT + customers / rate)
    times = sorted(r.time for r in sends)
    assert times[-1] - times[0] >= (customers - 1) / rate * 0.9
    # Spaced, not bunched into bursts: no send comes ahead of the schedule that the one before
    # it set. Each send takes a slot 1/rate after the previous slot, and reaches Meta at its
    # slot or a little after it (a busy event loop, a garbage collection of the test process).
    # A late send does not move the next slot, so the gap after it shrinks by its lateness:
    # send j comes at least (j - i) / rate after send i, less send i's lateness, which is
    # bounded here by LATE. A burst of sends puts several within a fraction of one interval.
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    for i, j in itertools.combinations(range(customers), 2):
        assert times[j] - times[i] >= (j - i) / rate - LATE, (i, j, gaps)
    assert all(r.status == 200 for r in graph_sim.attempts_to(phones[0]))
    refused = [r for r in graph_sim.requests if r.status is not None and r.status >= 400]
    assert refused == []
