"""Text neither store can hold, and ids that are not ids, in signed webhooks (both backends).

A JSON ``\\u0000`` escape parses into a NUL (PostgreSQL refuses it), ``\\ud800`` into a lone
surrogate (SQLite's driver refuses it): such an item is filed with the character replaced by
U+FFFD, beside the batch's other items, and everyone is answered. An account id that is not
digits is never filed, so no Graph URL is ever built from it.
"""

from __future__ import annotations

import json
from typing import Any

from parley.testing import GraphSimulator
from tests.conftest import Parley
from tests.factories import (
    PHONE_NUMBER_ID,
    messaging_text,
    new_wamid,
    signed_headers,
    whatsapp_texts,
)

FFFD = "\ufffd"


async def post_ascii(parley: Parley, channel: str, payload: dict[str, Any]) -> int:
    """Post `payload` signed, written as Meta writes it: ASCII, everything else escaped
    (so a NUL is ``\\u0000`` and a lone surrogate ``\\ud800`` on the wire)."""
    body = json.dumps(payload).encode()
    response = await parley.client.post(
        f"/webhooks/{channel}", content=body, headers=signed_headers(body)
    )
    return response.status_code


def batch_of(*customers: tuple[str, str, str, str | None]) -> dict[str, Any]:
    """One WhatsApp change carrying a text from each (phone, name, text, message id)."""
    payload = whatsapp_texts(customers[0][0], [customers[0][2]], name=customers[0][1])
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"], value["messages"] = [], []
    for phone, name, text, message_id in customers:
        one = whatsapp_texts(phone, [text], name=name)["entry"][0]["changes"][0]["value"]
        one["messages"][0]["id"] = message_id or new_wamid()
        value["contacts"] += one["contacts"]
        value["messages"] += one["messages"]
    return payload


async def test_a_batch_with_nul_and_lone_surrogates_is_filed_whole_and_answered(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    odd_id = "wamid.odd\x00id"
    payload = batch_of(
        ("34600000301", "Ana", "good morning", None),
        ("34600000302", "Bea", "odd \x00 nul", None),
        ("34600000303", "Cai", "odd \ud800 lone", None),
        ("34600000304", "D\x00an\udfff", "odd name", None),
        ("34600000305", "Eva", "odd id", odd_id),
    )
    assert await post_ascii(parley, "whatsapp", payload) == 200
    await parley.wait_filed()

    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]  # none set aside
    stored = await parley.rows(
        "SELECT c.phone, c.name, m.text, m.channel_message_id FROM messages m "
        "JOIN conversations v ON v.id = m.conversation_id JOIN contacts c ON c.id = v.contact_id "
        "WHERE m.direction = 'in' ORDER BY c.phone"
    )
    assert [(phone, name, text) for phone, name, text, _ in stored] == [
        ("34600000301", "Ana", "good morning"),
        ("34600000302", "Bea", f"odd {FFFD} nul"),
        ("34600000303", "Cai", f"odd {FFFD} lone"),
        ("34600000304", f"D{FFFD}an{FFFD}", "odd name"),
        ("34600000305", "Eva", "odd id"),
    ]
    assert stored[-1][3] == f"wamid.odd{FFFD}id"
    await graph_sim.wait_for_sends(5, timeout=15)
    for phone in ("34600000301", "34600000302", "34600000303", "34600000304", "34600000305"):
        assert graph_sim.texts_to(phone), phone

    # The same batch again (Meta redelivers): recognised, nothing filed twice.
    assert await post_ascii(parley, "whatsapp", payload) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT count(*) FROM messages WHERE direction = 'in'") == [(5,)]


async def test_a_messenger_text_with_nul_and_a_lone_surrogate_is_filed_cleaned(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    good = messaging_text("messenger", "1234567890", "5678", "hello")
    odd = messaging_text("messenger", "1234567890", "5679", "odd \x00 and \ud800")
    good["entry"][0]["messaging"] += odd["entry"][0]["messaging"]
    assert await post_ascii(parley, "messenger", good) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT text FROM messages WHERE direction = 'in' ORDER BY text") == [
        ("hello",),
        (f"odd {FFFD} and {FFFD}",),
    ]
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]


async def test_a_path_traversal_phone_number_id_is_refused_and_nothing_goes_out_for_it(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    odd = whatsapp_texts("34600000311", ["odd account"], phone_number_id="../../../v1/me")
    good = whatsapp_texts("34600000312", ["good account"])
    odd["entry"] += good["entry"]
    assert await post_ascii(parley, "whatsapp", odd) == 200
    await parley.wait_filed()

    assert await parley.rows("SELECT text FROM messages WHERE direction = 'in'") == [
        ("good account",)
    ]
    assert await parley.rows("SELECT external_id FROM accounts WHERE channel = 'whatsapp'") == [
        (PHONE_NUMBER_ID,)
    ]
    await graph_sim.wait_for_sends(1, timeout=15)
    assert graph_sim.texts_to("34600000312")
    assert graph_sim.texts_to("34600000311") == []
    paths = {r.path for r in graph_sim.requests}
    assert all(path.endswith(f"/{PHONE_NUMBER_ID}/messages") for path in paths), paths


async def test_a_wa_id_that_is_not_digits_is_skipped_beside_a_good_one(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    payload = batch_of(
        ("34600000321", "Ana", "good", None),
        ("../../me", "Odd", "odd sender", None),
    )
    assert await post_ascii(parley, "whatsapp", payload) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT text FROM messages WHERE direction = 'in'") == [("good",)]
    assert await parley.rows("SELECT count(*) FROM contacts WHERE phone = '../../me'") == [(0,)]


async def test_a_messenger_entry_id_that_is_not_digits_is_skipped(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    odd = messaging_text("messenger", "../me", "5680", "odd page")
    good = messaging_text("messenger", "1234567890", "5681", "good page")
    odd["entry"] += good["entry"]
    assert await post_ascii(parley, "messenger", odd) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT text FROM messages WHERE direction = 'in'") == [("good page",)]
    assert await parley.rows("SELECT count(*) FROM accounts WHERE external_id = '../me'") == [(0,)]


async def test_an_id_wider_than_the_store_leaves_out_only_its_item_and_a_long_name_is_cut(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    payload = batch_of(
        ("34600000331", "Ana", "good", None),
        ("34600000332", "Bea", "odd id", "wamid." + "x" * 1_000),
        ("34600000333", "N" * 1_000, "long name", None),
    )
    assert await post_ascii(parley, "whatsapp", payload) == 200
    await parley.wait_filed()
    assert await parley.rows("SELECT count(*) FROM inbox") == [(0,)]
    assert await parley.rows(
        "SELECT c.name, m.text FROM messages m JOIN conversations v ON v.id = m.conversation_id"
        " JOIN contacts c ON c.id = v.contact_id WHERE m.direction = 'in' ORDER BY c.phone"
    ) == [("Ana", "good"), ("N" * 255, "long name")]
