"""`DELETE /admin/contacts/{id}`: one customer erased everywhere, here and upstream, with an
audit record that holds nothing personal; usage sums stay; a second erasure is a clean 404; a
turn running meanwhile stores nothing. And retention, as `parley serve` runs it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Base, Contact, Conversation, InboxEntry, utcnow
from parley.store.queries.responses import api_parties
from parley.testing import GraphSimulator, OpenAISimulator
from tests.api.test_admin import ADMIN
from tests.conftest import MakeParley, Parley, Store
from tests.factories import body_bytes, signed_headers, whatsapp_texts

PHONE = "34611223344"
NAME = "Wilhelmina Quarterfield"
OTHER = "34655667788"


async def write(parley: Parley, phone: str, texts: list[str], name: str = "Ana") -> None:
    body = body_bytes(whatsapp_texts(phone, texts, name=name))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


async def contact_id(store: Store, phone: str) -> int:
    (row,) = await store.rows("SELECT id FROM contacts WHERE phone = ?", phone)
    return int(row[0])


async def dump(store: Store) -> str:
    """Every row of every table, as text: what an auditor searching the database sees."""
    rows: list[Any] = []
    for table in Base.metadata.sorted_tables:
        rows += await store.rows(f"SELECT * FROM {table.name}")
    return repr(rows)


async def test_erasure_removes_the_customer_everywhere_and_keeps_an_anonymous_record(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, store: Store
) -> None:
    await write(parley, PHONE, ["hello, I am Wilhelmina"], name=NAME)
    await graph_sim.wait_for_sends(1, timeout=10)
    await write(parley, PHONE, ["my order is late"], name=NAME)
    await write(parley, OTHER, ["hi from someone else"])
    await graph_sim.wait_for_sends(3, timeout=10)
    await parley.wait_for_rows("SELECT count(*) FROM outbox", [(0,)])
    # A webhook kept as unreadable that names the customer.
    raw = body_bytes(whatsapp_texts(PHONE, ["a leftover"], name=NAME))
    async with store.engine.begin() as connection:
        await connection.execute(
            insert(InboxEntry).values(
                channel="whatsapp", body=raw, correlation_id="c", failed_at=utcnow(), error="x"
            )
        )
    customer = await contact_id(store, PHONE)
    (remote,) = await store.rows(
        "SELECT remote_conversation_id FROM conversations WHERE contact_id = ?", customer
    )
    answered_by = [
        r[0]
        for r in await store.rows(
            "SELECT DISTINCT m.response_id FROM messages m JOIN conversations c "
            "ON c.id = m.conversation_id WHERE c.contact_id = ? AND m.response_id IS NOT NULL",
            customer,
        )
    ]
    usage = await store.rows("SELECT day, account_id, model, requests, cost_usd FROM usage_daily")
    assert len(answered_by) == 2 and usage and NAME in await dump(store)

    response = await parley.client.delete(f"/admin/contacts/{customer}", headers=ADMIN)

    assert response.status_code == 200, response.text
    erased = response.json()
    assert erased["contact_id"] == customer and erased["requested_by"] == "_admin"
    counts = [erased[k] for k in ("conversations", "messages", "outbox", "responses", "inbox")]
    assert counts == [1, 4, 0, 0, 1]
    assert erased["upstream"] == 3  # the conversation and the two stored responses
    await openai_sim.wait_for_deletions(conversations=1, responses=2, timeout=10)
    assert openai_sim.deleted_conversations == [remote[0]]
    assert sorted(openai_sim.deleted_responses) == sorted(answered_by)
    await store.wait_for_rows("SELECT count(*) FROM upstream_deletions", [(0,)])

    everything = await dump(store)
    assert PHONE not in everything and NAME not in everything and "Wilhelmina" not in everything
    assert await store.rows("SELECT count(*) FROM contacts WHERE phone = ?", OTHER) == [(1,)]
    assert await store.rows("SELECT count(*) FROM messages") == [(2,)]  # the other customer's
    assert (
        await store.rows("SELECT day, account_id, model, requests, cost_usd FROM usage_daily")
        == usage
    )
    (record,) = await store.rows(
        "SELECT contact_id, requested_by, channel, channel_id_hash, messages FROM erasures"
    )
    assert record[:3] == (customer, "_admin", "whatsapp") and record[4] == 4
    assert len(record[3]) == 64 and PHONE not in record[3]
    listed = await parley.client.get("/admin/erasures", headers=ADMIN)
    assert [e["contact_id"] for e in listed.json()] == [customer]

    again = await parley.client.delete(f"/admin/contacts/{customer}", headers=ADMIN)
    assert again.status_code == 404 and "already erased" in again.json()["detail"]
    assert await store.rows("SELECT count(*) FROM erasures") == [(1,)]


async def test_erasure_needs_an_admin_and_a_known_contact(parley: Parley, store: Store) -> None:
    await write(parley, OTHER, ["hi"])
    await parley.wait_filed()
    customer = await contact_id(store, OTHER)
    assert (await parley.client.delete(f"/admin/contacts/{customer}")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    response = await parley.client.delete(f"/admin/contacts/{customer}", headers=wrong)
    assert response.status_code == 401
    created = await parley.client.post(
        "/admin/users", json={"name": "clerk", "is_admin": False}, headers=ADMIN
    )
    clerk = {"Authorization": f"Bearer {created.json()['token']['token']}"}
    response = await parley.client.delete(f"/admin/contacts/{customer}", headers=clerk)
    assert response.status_code == 403
    unknown = await parley.client.delete("/admin/contacts/987654", headers=ADMIN)
    assert unknown.status_code == 404 and "no contact 987654" in unknown.json()["detail"]
    # A Responses API user's own contact is the user's: deleting the user is the way.
    async with store.engine.begin() as connection:
        session = AsyncSession(bind=connection)
        _, api_contact = await api_parties(session, user_id=1, user_name="someone")
        await session.flush()
    refused = await parley.client.delete(f"/admin/contacts/{api_contact.id}", headers=ADMIN)
    assert refused.status_code == 409 and "Responses API" in refused.json()["detail"]
    assert await store.rows("SELECT count(*) FROM contacts") == [(2,)]
    assert await store.rows("SELECT count(*) FROM erasures") == [(0,)]


async def test_a_turn_running_during_the_erasure_stores_nothing_and_its_upstream_goes(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, store: Store
) -> None:
    # The model is slow: the customer is erased while their first turn waits upstream.
    openai_sim.latency = 1.0
    await write(parley, PHONE, ["erase me while you think"], name=NAME)
    await openai_sim.wait_for_requests(1, path="/v1/conversations", timeout=10)
    customer = await contact_id(store, PHONE)

    response = await parley.client.delete(f"/admin/contacts/{customer}", headers=ADMIN)
    assert response.status_code == 200 and response.json()["messages"] == 1

    # The turn goes on upstream: its new conversation and its response are deleted there,
    # and nothing of it comes back here. (What the turn made is queued by the turn, and the
    # drainer finds it at its next look, within its poll interval.)
    await openai_sim.wait_for_deletions(conversations=1, responses=1, timeout=30)
    await store.wait_for_rows("SELECT count(*) FROM upstream_deletions", [(0,)])
    assert len(openai_sim.response_requests) == 1
    for table in ("contacts", "conversations", "messages", "outbox"):
        assert await store.rows(f"SELECT count(*) FROM {table}") == [(0,)], table
    assert graph_sim.sends == []
    everything = await dump(store)
    assert PHONE not in everything and NAME not in everything


async def test_serve_sweeps_conversations_idle_past_the_retention_limit(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, store: Store
) -> None:
    first = make_parley()
    await write(first, PHONE, ["an old question"])
    await write(first, OTHER, ["a recent question"])
    await graph_sim.wait_for_sends(2, timeout=10)
    await first.wait_for_rows("SELECT count(*) FROM outbox", [(0,)])
    await first.stop()
    old = await contact_id(store, PHONE)
    (remote,) = await store.rows(
        "SELECT remote_conversation_id FROM conversations WHERE contact_id = ?", old
    )
    await backdate(store, old, days=40)  # forty days pass for the first customer

    make_parley(parley_retention_days=30)

    await openai_sim.wait_for_deletions(conversations=1, responses=1, timeout=15)
    assert openai_sim.deleted_conversations == [remote[0]]
    await store.wait_for_rows("SELECT phone FROM contacts", [(OTHER,)])
    assert await store.rows("SELECT count(*) FROM messages") == [(2,)]
    assert await store.rows("SELECT count(*) FROM usage_daily") != [(0,)]


async def backdate(store: Store, contact: int, *, days: int) -> None:
    """Make the contact and their conversations look `days` old, with the store's own types."""
    when = utcnow() - timedelta(days=days)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(Conversation)
            .where(Conversation.contact_id == contact)
            .values(last_message_at=when, created_at=when)
        )
        await connection.execute(
            update(Contact).where(Contact.id == contact).values(created_at=when)
        )
