"""The admin API's conversations and contacts on a running Parley: filters, search, cursor
pages that neither repeat nor skip while rows are added, the transcript's fields, and clear
4xx answers to bad ids, cursors and tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from parley.store.models import Account, Contact, Conversation, Message, utcnow
from tests.api.test_users import create_user
from tests.conftest import ADMIN_TOKEN, Parley, Store

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOW = utcnow().replace(microsecond=0)


@dataclass
class Seeded:
    conversations: list[int]
    """Every conversation, in the listing's order (latest activity first, then id)."""
    shop: int
    page: int
    ana: int
    """Ana's contact id (her conversation is in human mode, waiting)."""
    waiting: int
    failed: int
    costly_message: int


async def _id(connection: AsyncConnection, table: Any, **values: Any) -> int:
    return int((await connection.execute(insert(table).values(**values))).inserted_primary_key[0])


async def seed(store: Store) -> Seeded:
    """Two accounts, seven customers, each with a conversation; two share a last activity."""
    async with store.engine.begin() as c:
        shop = await _id(c, Account, channel="whatsapp", external_id="5550001", name="Shop")
        page = await _id(c, Account, channel="messenger", external_id="7770001", name="Page")
        people = [
            (shop, "34600100001", "Ana Lopez", "34600100001", None),
            (shop, "34600100002", "Bruno", "34600100002", None),
            (shop, "34600100003", "Carla 100%", "34600100003", None),
            (shop, "34600100004", None, "34600100004", None),
            (page, "psid-0005", "Dmitri", None, "dmitri_k"),
            (page, "psid-0006", "Eve", None, None),
            (page, "psid-0007", "Fatima", None, None),
        ]
        minutes = [50, 40, 30, 30, 20, 10, 60]  # two conversations tie at 30 minutes ago
        rows: list[tuple[datetime, int]] = []
        ids: dict[str, int] = {}
        for (account, external, name, phone, username), ago in zip(people, minutes, strict=True):
            contact = await _id(
                c,
                Contact,
                account_id=account,
                external_id=external,
                name=name,
                phone=phone,
                username=username,
            )
            ids[external] = contact
            moment = NOW - timedelta(minutes=ago)
            conversation = await _id(
                c,
                Conversation,
                account_id=account,
                contact_id=contact,
                channel="whatsapp" if account == shop else "messenger",
                last_message_at=moment,
                next_sequence_no=4,  # two messages each, a third in some
                mode="human" if external == "34600100001" else "agent",
                assignee="agent" if external == "34600100001" else None,
            )
            rows.append((moment, conversation))
            ids[f"conversation:{external}"] = conversation
            for sequence_no, (direction, sender, status, text) in enumerate(
                [
                    ("in", "customer", "answered", f"hello from {external}"),
                    ("out", "agent", "sent", f"Echo: hello from {external}"),
                ],
                start=1,
            ):
                await _id(
                    c,
                    Message,
                    conversation_id=conversation,
                    account_id=account,
                    sequence_no=sequence_no,
                    direction=direction,
                    sender=sender,
                    text=text,
                    status=status,
                    created_at=moment,
                    updated_at=moment,
                    meta={"correlation_id": f"corr-{external}"},
                )
        waiting = ids["conversation:34600100001"]
        await _id(
            c,
            Message,
            conversation_id=waiting,
            account_id=shop,
            sequence_no=3,
            direction="in",
            sender="customer",
            text="is anybody there?",
            status="received",
            meta={},
        )
        failed = ids["conversation:psid-0006"]
        await _id(
            c,
            Message,
            conversation_id=failed,
            account_id=page,
            sequence_no=3,
            direction="out",
            sender="agent",
            text="not delivered",
            status="failed",
            error="outside the window",
            meta={},
        )
        costly = await _id(
            c,
            Message,
            conversation_id=ids["conversation:34600100002"],
            account_id=shop,
            sequence_no=3,
            direction="out",
            sender="agent",
            text="a priced answer",
            status="delivered",
            model="gpt-5-mini",
            input_tokens=120,
            cached_tokens=20,
            output_tokens=30,
            reasoning_tokens=5,
            cost_usd=Decimal("0.00012345"),
            latency_ms=850,
            response_id="resp_1",
            meta={"correlation_id": "corr-priced", "prompt": {"name": "sales", "version": 2}},
        )
    ordered = [cid for _, cid in sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)]
    return Seeded(ordered, shop, page, ids["34600100001"], waiting, failed, costly)


async def listing(parley: Parley, **params: Any) -> dict[str, Any]:
    response = await parley.client.get("/admin/conversations", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def ids_of(parley: Parley, **params: Any) -> list[int]:
    return [row["id"] for row in (await listing(parley, **params))["data"]]


async def test_pages_neither_repeat_nor_skip_while_conversations_are_added(
    parley: Parley,
) -> None:
    seeded = await seed(parley.store)
    assert await ids_of(parley) == seeded.conversations

    seen: list[int] = []
    page = await listing(parley, limit=2)
    seen += [row["id"] for row in page["data"]]
    async with parley.store.engine.begin() as c:  # a new conversation arrives meanwhile
        contact = await _id(c, Contact, account_id=seeded.shop, external_id="34600100099")
        newest = await _id(
            c, Conversation, account_id=seeded.shop, contact_id=contact, channel="whatsapp"
        )
    while page["next_cursor"]:
        page = await listing(parley, limit=2, cursor=page["next_cursor"])
        seen += [row["id"] for row in page["data"]]
    assert seen == seeded.conversations
    assert (await ids_of(parley, limit=1)) == [newest]


async def test_filters_and_search(parley: Parley) -> None:
    seeded = await seed(parley.store)
    everything = seeded.conversations
    messenger = await ids_of(parley, channel="messenger")
    assert len(messenger) == 3 and set(messenger) < set(everything)
    assert await ids_of(parley, account_id=seeded.page) == messenger
    assert await ids_of(parley, mode="human") == [seeded.waiting]
    assert len(await ids_of(parley, mode="agent")) == 6
    assert await ids_of(parley, waiting="true") == [seeded.waiting]
    assert await ids_of(parley, failed="true") == [seeded.failed]
    assert seeded.failed not in await ids_of(parley, failed="false")
    since = (NOW - timedelta(minutes=35)).isoformat()
    assert len(await ids_of(parley, since=since)) == 4  # 30 (twice), 20 and 10 minutes ago

    assert await ids_of(parley, q="ana lo") == [seeded.waiting]  # name, any case
    assert len(await ids_of(parley, q="3460010000")) == 4  # phone
    assert len(await ids_of(parley, q="psid-000")) == 3  # the channel's id
    assert len(await ids_of(parley, q="DMITRI_K")) == 1  # handle
    assert len(await ids_of(parley, q="100%")) == 1  # % is a character, not a wildcard
    assert await ids_of(parley, q="nobody") == []

    row = (await listing(parley, mode="human"))["data"][0]
    assert row["contact_name"] == "Ana Lopez" and row["account_name"] == "Shop"
    assert row["last_message_preview"] == "is anybody there?"
    assert (row["waiting"], row["failed"], row["message_count"]) == (True, False, 3)
    assert (row["mode"], row["assignee"]) == ("human", "agent")


async def test_the_transcript_shows_what_each_message_cost(parley: Parley) -> None:
    seeded = await seed(parley.store)
    (conversation_id,) = await ids_of(parley, q="bruno")
    detail = await parley.client.get(f"/admin/conversations/{conversation_id}", headers=ADMIN)
    assert detail.status_code == 200 and detail.json()["contact_name"] == "Bruno"

    first = await parley.client.get(
        f"/admin/conversations/{conversation_id}/messages", params={"limit": 2}, headers=ADMIN
    )
    assert first.status_code == 200
    page = first.json()
    assert [m["sequence_no"] for m in page["data"]] == [1, 2]
    assert page["data"][0]["correlation_id"] == "corr-34600100002"
    rest = await parley.client.get(
        f"/admin/conversations/{conversation_id}/messages",
        params={"cursor": page["next_cursor"]},
        headers=ADMIN,
    )
    (priced,) = rest.json()["data"]
    assert rest.json()["next_cursor"] is None
    assert priced["id"] == seeded.costly_message
    assert {k: priced[k] for k in ("input_tokens", "cached_tokens", "output_tokens")} == {
        "input_tokens": 120,
        "cached_tokens": 20,
        "output_tokens": 30,
    }
    assert Decimal(priced["cost_usd"]) == Decimal("0.00012345")
    assert (priced["latency_ms"], priced["model"], priced["status"]) == (
        850,
        "gpt-5-mini",
        "delivered",
    )
    assert priced["prompt"] == {"name": "sales", "version": 2}
    assert priced["correlation_id"] == "corr-priced"


async def test_contacts_are_listed_searched_and_shown(parley: Parley) -> None:
    seeded = await seed(parley.store)
    everyone = await parley.client.get("/admin/contacts", params={"limit": 4}, headers=ADMIN)
    assert everyone.status_code == 200
    first = everyone.json()
    rest = await parley.client.get(
        "/admin/contacts", params={"limit": 4, "cursor": first["next_cursor"]}, headers=ADMIN
    )
    ids = [c["id"] for c in first["data"] + rest.json()["data"]]
    assert len(ids) == 7 == len(set(ids)) and rest.json()["next_cursor"] is None

    found = await parley.client.get("/admin/contacts", params={"q": "ana"}, headers=ADMIN)
    (ana,) = found.json()["data"]
    assert (ana["id"], ana["phone"], ana["channel"]) == (seeded.ana, "34600100001", "whatsapp")
    shown = await parley.client.get(f"/admin/contacts/{seeded.ana}", headers=ADMIN)
    assert shown.status_code == 200
    assert [c["id"] for c in shown.json()["conversations"]] == [seeded.waiting]
    assert shown.json()["conversation_count"] == 1


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/conversations/9223372036854775808", 422),
        ("/admin/conversations/99999999999999999999999", 422),
        ("/admin/conversations/0", 422),
        ("/admin/conversations/abc", 422),
        ("/admin/conversations/424242", 404),
        ("/admin/conversations/424242/messages", 404),
        ("/admin/conversations/9223372036854775808/messages", 422),
        ("/admin/contacts/9223372036854775808", 422),
        ("/admin/contacts/424242", 404),
        ("/admin/conversations/9223372036854775808/usage", 422),
        ("/admin/conversations?cursor=not-a-cursor", 422),
        ("/admin/conversations?cursor=" + cursor_of({"a": 1}), 422),
        ("/admin/conversations?cursor=" + cursor_of(["2026-01-01", 1]), 422),
        ("/admin/conversations?cursor=" + cursor_of([1, 2]), 422),
        ("/admin/conversations?cursor=" + cursor_of(["2026-01-01T00:00:00+00:00", "1"]), 422),
        ("/admin/contacts?cursor=" + cursor_of([True]), 422),
        ("/admin/contacts?cursor=%%%%", 422),
        ("/admin/conversations?limit=0", 422),
        ("/admin/conversations?limit=100000", 422),
        ("/admin/conversations?mode=robot", 422),
        ("/admin/conversations?since=yesterday", 422),
        ("/admin/conversations?account_id=9223372036854775808", 422),
        ("/admin/conversations?waiting=perhaps", 422),
    ],
)
async def test_bad_ids_and_parameters_are_clear_4xx(parley: Parley, path: str, status: int) -> None:
    response = await parley.client.get(path, headers=ADMIN)
    assert response.status_code == status, response.text
    assert "detail" in response.json()


async def test_bad_ids_on_the_operators_actions(parley: Parley) -> None:
    for action in ("takeover", "handback"):
        huge = await parley.client.post(
            f"/admin/conversations/9223372036854775808/{action}", headers=ADMIN
        )
        assert huge.status_code == 422
        missing = await parley.client.post(f"/admin/conversations/424242/{action}", headers=ADMIN)
        assert missing.status_code == 404
    huge_retry = await parley.client.post(
        "/admin/messages/9223372036854775808/retry", headers=ADMIN
    )
    assert huge_retry.status_code == 422
    unknown_field = await parley.client.post(
        "/admin/conversations/1/takeover", json={"operatr": "x"}, headers=ADMIN
    )
    assert unknown_field.status_code == 422


async def test_the_admin_token_is_required(parley: Parley) -> None:
    plain_token = (await create_user(parley, "bob"))["token"]["token"]
    plain = {"Authorization": f"Bearer {plain_token}"}
    for method, path in [
        ("GET", "/admin/conversations"),
        ("GET", "/admin/conversations/1"),
        ("GET", "/admin/conversations/1/messages"),
        ("POST", "/admin/conversations/1/takeover"),
        ("POST", "/admin/conversations/1/handback"),
        ("GET", "/admin/contacts"),
        ("GET", "/admin/contacts/1"),
    ]:
        assert (await parley.client.request(method, path)).status_code == 401
        assert (await parley.client.request(method, path, headers=plain)).status_code == 403
    reply = await parley.client.post(
        "/admin/conversations/1/messages", json={"text": "hi"}, headers=plain
    )
    assert reply.status_code == 403
