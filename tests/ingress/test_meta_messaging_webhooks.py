"""Messenger and Instagram end to end: every real sample signed and posted to a running Parley,
answers observed at the Graph simulators (graph.facebook.com and graph.instagram.com), the
store read as an auditor would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from parley.channels.text import UTF8_BYTES, split_text
from parley.testing import GraphSimulator, OpenAISimulator, Recorded
from tests.conftest import INSTAGRAM_TOKEN, MESSENGER_TOKEN, MakeParley, Parley
from tests.factories import (
    APP_SECRET,
    FIXTURES,
    INSTAGRAM_APP_SECRET,
    VERIFY_TOKEN,
    body_bytes,
    messaging_body,
    messaging_text,
    new_mid,
    sample,
    signed_headers,
)

IG_ACCOUNT = "17841400538867190"
PAGE = "109029271668032"

# Which customers each sample's reply goes to (one reply each), on which account.
ANSWERED: dict[str, list[tuple[str, str]]] = {
    "instagram/facebook_login_text.json": [("17841462460365475", "24286888740958239")],
    "instagram/image_attachment.json": [("17841472110558136", "489760440872775")],
    "instagram/instagram_login_text.json": [(IG_ACCOUNT, "1129842642640637")],
    "instagram/postback_doc_example.json": [("17841400000000001", "<INSTAGRAM_SCOPED_ID>")],
    "instagram/share_attachment.json": [("17841472110558136", "489760440872775")],
    "instagram/story_mention.json": [("1234567890", "5678")],
    "instagram/story_reply.json": [("17841453247170088", "3603717463085785")],
    "messenger/attachment_image.json": [("1234567890", "5678")],
    "messenger/batch_two_entries.json": [
        ("1895382890692545", "1412611362105802"),
        ("189538289069256", "1412611362105802"),
    ],
    "messenger/postback_get_started.json": [("1234567890", "5678")],
    "messenger/quick_reply.json": [("111899832631525", "1433960459967306")],
    "messenger/text.json": [(PAGE, "4714860478621687")],
}
# Files cannot be read yet: the customer is told so without a model call.


def offline(payload: dict[str, Any]) -> dict[str, Any]:
    """The sample with its attachments' URLs moved off Meta's CDN to a host Parley refuses to
    fetch from, so that no test reaches the internet: the agent is told the file could not be
    loaded, and answers."""
    text = json.dumps(payload)
    for cdn in ("https://lookaside.fbsbx.com/", "https://image-url/"):
        text = text.replace(cdn, "https://files.example.invalid/")
    result: dict[str, Any] = json.loads(text)
    return result


# Echoes, edits, deletions, reactions, reads, deliveries and a heart: filed, never answered.
NOT_ANSWERED = [
    "instagram/deleted_message.json",
    "instagram/echo_ig_reel.json",
    "instagram/message_edit.json",
    "instagram/reaction_dashboard_test.json",
    "instagram/seen_doc_example.json",
    "instagram/sticker_like_heart.json",
    "messenger/delivery.json",
    "messenger/echo.json",
    "messenger/read.json",
    "messenger/sticker_thumbs_up.json",
]


def test_the_lists_cover_every_sample() -> None:
    names = {
        f"{path.parent.name}/{path.name}"
        for channel in ("instagram", "messenger")
        for path in (FIXTURES / channel).glob("*.json")
    }
    assert names == set(ANSWERED) | set(NOT_ANSWERED)


async def post(parley: Parley, channel: str, payload: dict[str, Any], secret: str = "") -> int:
    body = body_bytes(payload)
    secret = secret or (INSTAGRAM_APP_SECRET if channel == "instagram" else APP_SECRET)
    response = await parley.client.post(
        f"/webhooks/{channel}", content=body, headers=signed_headers(body, secret)
    )
    return response.status_code


def host(channel: str, graph_sim: GraphSimulator, instagram_sim: GraphSimulator) -> GraphSimulator:
    """Where the channel's replies go with the test environment (Instagram Login)."""
    return instagram_sim if channel == "instagram" else graph_sim


def pages(name: str) -> list[str]:
    return [entry["id"] for entry in sample(name)["entry"]]


def model_calls(openai_sim: OpenAISimulator) -> int:
    return len(openai_sim.response_requests)


async def probe(
    parley: Parley, channel: str, account: str, sim: GraphSimulator, sends_before: int
) -> None:
    """Another customer writes and is answered: the worker is alive and has caught up."""
    assert await post(parley, channel, messaging_text(channel, account, "probe", "ping")) == 200
    await sim.wait_for_sends(sends_before + 1, timeout=10)
    assert sim.texts_to("probe") == ["Echo: ping"]


@pytest.mark.parametrize("name", sorted(ANSWERED))
async def test_a_sample_is_answered_once(
    parley: Parley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    instagram_sim: GraphSimulator,
    name: str,
) -> None:
    channel = name.split("/")[0]
    graph_sim.messenger_pages.update(pages(name) if channel == "messenger" else [])
    sim = host(channel, graph_sim, instagram_sim)
    expected = ANSWERED[name]

    body = offline(sample(name))
    assert await post(parley, channel, body) == 200
    assert await post(parley, channel, body) == 200  # Meta redelivers
    sends = await sim.wait_for_sends(len(expected), timeout=10)
    assert await post(parley, channel, body) == 200  # and again after the answer
    await probe(parley, channel, expected[0][0], sim, len(expected))

    answers = [s for s in sim.sends if s.json and s.json["recipient"]["id"] != "probe"]
    assert sorted((s.path, s.json["recipient"]["id"]) for s in answers if s.json) == sorted(
        (f"/v26.0/{account}/messages", user) for account, user in expected
    )
    token = INSTAGRAM_TOKEN if channel == "instagram" else MESSENGER_TOKEN
    assert {s.headers["authorization"] for s in sends} == {f"Bearer {token}"}
    assert model_calls(openai_sim) == len(expected) + 1
    # Seen, then typing, for the customer, before each answer.
    for account, user in expected:
        actions = [
            r.json["sender_action"]
            for r in sim.receipts
            if r.json
            and r.json["recipient"]["id"] == user
            and r.path.startswith(f"/v26.0/{account}")
        ]
        assert actions == ["mark_seen", "typing_on"]
    other = graph_sim if sim is instagram_sim else instagram_sim
    assert other.requests == []
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status <> 'answered'", [(0,)]
    )


@pytest.mark.parametrize("name", NOT_ANSWERED)
async def test_a_sample_that_is_no_question_is_filed_not_answered(
    parley: Parley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    instagram_sim: GraphSimulator,
    name: str,
) -> None:
    channel = name.split("/")[0]
    graph_sim.messenger_pages.update(pages(name) if channel == "messenger" else [])
    sim = host(channel, graph_sim, instagram_sim)

    assert await post(parley, channel, sample(name)) == 200
    assert await post(parley, channel, sample(name)) == 200
    await probe(parley, channel, pages(name)[0], sim, 0)

    assert [s.json["recipient"]["id"] for s in sim.sends if s.json] == ["probe"]
    assert model_calls(openai_sim) == 1
    assert await parley.rows("SELECT count(*) FROM messages WHERE status = 'received'") == [(0,)]
    assert await parley.rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='answered'"
    ) == [(1,)]  # the probe's


# --- Instagram's two setups -----------------------------------------------------------------------


async def test_instagram_login_answers_through_graph_instagram(
    parley: Parley, graph_sim: GraphSimulator, instagram_sim: GraphSimulator
) -> None:
    payload = sample("instagram/instagram_login_text.json")
    mid = payload["entry"][0]["messaging"][0]["message"]["mid"]
    assert await post(parley, "instagram", payload, INSTAGRAM_APP_SECRET) == 200

    (send,) = await instagram_sim.wait_for_sends(1, timeout=10)
    assert send.path == f"/v26.0/{IG_ACCOUNT}/messages"
    assert send.headers["authorization"] == f"Bearer {INSTAGRAM_TOKEN}"
    assert send.json == {
        "recipient": {"id": "1129842642640637"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Echo: oi"},
        "reply_to": {"mid": mid},
    }
    assert graph_sim.requests == []
    await parley.wait_for_rows(
        "SELECT direction, status FROM messages ORDER BY sequence_no",
        [("in", "answered"), ("out", "sent")],
    )


async def test_a_page_linked_instagram_account_answers_through_its_page(
    make_parley: MakeParley, graph_sim: GraphSimulator, instagram_sim: GraphSimulator
) -> None:
    parley = make_parley(
        instagram_setup="facebook_page",
        instagram_page_id=PAGE,
        instagram_access_token=SecretStr("page-token-for-instagram"),
    )
    payload = sample("instagram/facebook_login_text.json")
    # Page-linked accounts' webhooks are signed by the Meta app.
    assert await post(parley, "instagram", payload, APP_SECRET) == 200

    (send,) = await graph_sim.wait_for_sends(1, timeout=10)
    assert send.path == f"/v26.0/{PAGE}/messages"
    assert send.headers["authorization"] == "Bearer page-token-for-instagram"
    assert send.json is not None
    assert send.json["recipient"] == {"id": "24286888740958239"}
    assert send.json["message"] == {"text": "Echo: !h"}
    assert instagram_sim.requests == []


async def test_an_instagram_webhook_signed_by_neither_app_is_refused(parley: Parley) -> None:
    payload = sample("instagram/instagram_login_text.json")
    assert await post(parley, "instagram", payload, "someone-elses-secret") == 401
    assert (
        await post(parley, "messenger", sample("messenger/text.json"), INSTAGRAM_APP_SECRET) == 401
    )
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]


async def test_handshakes(parley: Parley) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "77"}
    for channel in ("instagram", "messenger"):
        ok = await parley.client.get(f"/webhooks/{channel}", params=params)
        assert (ok.status_code, ok.text) == (200, "77")
        wrong = await parley.client.get(
            f"/webhooks/{channel}", params={**params, "hub.verify_token": "nope"}
        )
        assert wrong.status_code == 403


# --- echoes and handoff ---------------------------------------------------------------------------


def echo(account: str, user: str, mid: str, text: str) -> dict[str, Any]:
    item = {
        "sender": {"id": account},
        "recipient": {"id": user},
        "timestamp": 1780000000000,
        "message": {"mid": mid, "text": text, "is_echo": True},
    }
    return messaging_body("instagram", account, [item])


STATUS_OF = (
    "SELECT v.mode FROM conversations v JOIN contacts c ON c.id = v.contact_id"
    " WHERE c.external_id = '{user}'"
)


async def test_a_person_answering_from_the_app_stops_the_agent(
    parley: Parley, openai_sim: OpenAISimulator, instagram_sim: GraphSimulator
) -> None:
    user = "1180226157355226"
    assert (
        await post(parley, "instagram", messaging_text("instagram", IG_ACCOUNT, user, "hi")) == 200
    )
    await instagram_sim.wait_for_sends(1, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='out' AND status='sent'", [(1,)]
    )
    ((ours,),) = await parley.rows("SELECT channel_message_id FROM messages WHERE direction='out'")

    # Meta echoes Parley's own reply: nothing changes. A person writes from the Instagram app:
    # the conversation is theirs now (Meta delivers that echo twice).
    person = new_mid()
    for payload in [
        echo(IG_ACCOUNT, user, ours, "Echo: hi"),
        echo(IG_ACCOUNT, user, person, "Ana here!"),
        echo(IG_ACCOUNT, user, person, "Ana here!"),
    ]:
        assert await post(parley, "instagram", payload) == 200
    await parley.wait_for_rows(STATUS_OF.format(user=user), [("human",)])

    calls = model_calls(openai_sim)
    later = messaging_text("instagram", IG_ACCOUNT, user, "thanks Ana")
    assert await post(parley, "instagram", later) == 200
    await probe(parley, "instagram", IG_ACCOUNT, instagram_sim, 1)

    assert instagram_sim.texts_to(user) == ["Echo: hi"]
    assert model_calls(openai_sim) == calls + 1  # the probe's
    theirs = "SELECT m.{} FROM messages m JOIN conversations v ON v.id = m.conversation_id"
    theirs += f" JOIN contacts c ON c.id = v.contact_id WHERE c.external_id = '{user}'"
    assert await parley.rows(
        theirs.format("sender, m.status, m.text, m.channel_message_id")
        + " AND m.direction = 'out' ORDER BY m.sequence_no"
    ) == [("agent", "sent", "Echo: hi", ours), ("operator", "sent", "Ana here!", person)]
    assert await parley.rows(
        theirs.format("status, m.text") + " AND m.direction = 'in' ORDER BY m.sequence_no"
    ) == [("answered", "hi"), ("received", "thanks Ana")]  # waiting for the person


async def test_the_echo_of_a_reply_still_being_sent_is_not_a_person(
    parley: Parley, instagram_sim: GraphSimulator
) -> None:
    user = "1180226157355227"
    instagram_sim.latency = 1.0  # the send's answer is late; Meta's echo is not
    assert (
        await post(parley, "instagram", messaging_text("instagram", IG_ACCOUNT, user, "yo")) == 200
    )

    def in_flight() -> list[Recorded]:
        return [r for r in instagram_sim.requests if r.json and "message" in r.json]

    await instagram_sim.wait_until(in_flight, 1, 10, "a send in flight")
    assert await post(parley, "instagram", echo(IG_ACCOUNT, user, new_mid(), "Echo: yo")) == 200
    await instagram_sim.wait_for_sends(1, timeout=10)

    await parley.wait_for_rows(
        "SELECT sender, status FROM messages WHERE direction='out'", [("agent", "sent")]
    )
    await probe(parley, "instagram", IG_ACCOUNT, instagram_sim, 1)
    assert await parley.rows(STATUS_OF.format(user=user)) == [("agent",)]


# --- edits, deletions, reactions, reads -----------------------------------------------------------


def item(user: str, account: str = IG_ACCOUNT, **event: Any) -> dict[str, Any]:
    return {
        "sender": {"id": user},
        "recipient": {"id": account},
        "timestamp": 1780000000000,
        **event,
    }


async def test_edits_reactions_and_reads_change_the_story_not_the_answers(
    parley: Parley, openai_sim: OpenAISimulator, instagram_sim: GraphSimulator
) -> None:
    user, mid = "2182294425935229", new_mid()
    first = messaging_text("instagram", IG_ACCOUNT, user, "what tim do you open?", mid=mid)
    assert await post(parley, "instagram", first) == 200
    await instagram_sim.wait_for_sends(1, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='out' AND status='sent'", [(1,)]
    )
    ((ours,),) = await parley.rows("SELECT channel_message_id FROM messages WHERE direction='out'")

    events = [
        item(user, message_edit={"mid": mid, "text": "what time do you open?", "num_edit": 1}),
        item(user, reaction={"mid": ours, "action": "react", "reaction": "love", "emoji": "❤️"}),
        {"timestamp": 1780000000001, "read": {"mid": ours}},  # 2026: no sender at all
    ]
    assert await post(parley, "instagram", messaging_body("instagram", IG_ACCOUNT, events)) == 200
    await probe(parley, "instagram", IG_ACCOUNT, instagram_sim, 1)

    (inbound,) = await parley.rows(
        "SELECT text, meta, status FROM messages WHERE direction='in' AND channel_message_id = ?",
        mid,
    )
    assert inbound[0] == "what time do you open?"
    meta = inbound[1] if isinstance(inbound[1], dict) else json.loads(inbound[1])
    assert meta["original_text"] == "what tim do you open?"
    assert inbound[2] == "answered"
    ((status, out_meta),) = await parley.rows(
        "SELECT status, meta FROM messages WHERE channel_message_id = ?", ours
    )
    out_meta = out_meta if isinstance(out_meta, dict) else json.loads(out_meta)
    assert (status, out_meta["reaction"]) == ("read", "❤️")
    assert instagram_sim.texts_to(user) == ["Echo: what tim do you open?"]
    assert model_calls(openai_sim) == 2  # the first message and the probe


async def test_a_message_unsent_before_its_turn_is_never_answered(
    parley: Parley, openai_sim: OpenAISimulator, instagram_sim: GraphSimulator
) -> None:
    user, mid = "5678", new_mid()
    items = [
        item(user, message={"mid": mid, "text": "my card number is 4111 1111 1111 1111"}),
        item(user, message={"mid": mid, "is_deleted": True}),
    ]
    assert await post(parley, "instagram", messaging_body("instagram", IG_ACCOUNT, items)) == 200
    await probe(parley, "instagram", IG_ACCOUNT, instagram_sim, 0)

    assert instagram_sim.texts_to(user) == []
    assert model_calls(openai_sim) == 1
    ((text, status, error),) = await parley.rows(
        "SELECT text, status, error FROM messages WHERE channel_message_id = ?", mid
    )
    assert (text, status, error) == (None, "ignored", "deleted by the customer")


async def test_a_message_unsent_during_its_turn_is_not_answered(
    parley: Parley, openai_sim: OpenAISimulator, instagram_sim: GraphSimulator
) -> None:
    user, mid = "5679", new_mid()
    openai_sim.latency = 1.0
    said = messaging_text("instagram", IG_ACCOUNT, user, "oops, wrong chat", mid=mid)
    assert await post(parley, "instagram", said) == 200
    await openai_sim.wait_for_requests(1, timeout=10, path="/v1/responses")
    unsent = messaging_body(
        "instagram", IG_ACCOUNT, [item(user, message={"mid": mid, "is_deleted": True})]
    )
    assert await post(parley, "instagram", unsent) == 200
    openai_sim.latency = 0.0
    await probe(parley, "instagram", IG_ACCOUNT, instagram_sim, 0)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='in' AND status='answered'", [(1,)]
    )

    assert instagram_sim.texts_to(user) == []
    assert await parley.rows("SELECT status FROM messages WHERE channel_message_id = ?", mid) == [
        ("ignored",)
    ]


async def test_messenger_reads_by_watermark(parley: Parley, graph_sim: GraphSimulator) -> None:
    graph_sim.messenger_pages.add(PAGE)
    user = "4714860478621687"
    assert await post(parley, "messenger", messaging_text("messenger", PAGE, user, "hello")) == 200
    await graph_sim.wait_for_sends(1, timeout=10)
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction='out' AND status='sent'", [(1,)]
    )
    read = item(user, PAGE, read={"watermark": 4102444800000, "seq": 38})  # year 2100
    assert await post(parley, "messenger", messaging_body("messenger", PAGE, [read])) == 200
    await parley.wait_for_rows("SELECT status FROM messages WHERE direction='out'", [("read",)])


# --- limits ---------------------------------------------------------------------------------------


async def test_instagram_answers_are_split_within_1000_bytes(
    parley: Parley, instagram_sim: GraphSimulator
) -> None:
    text = " ".join(["Crème brûlée à 5 €, très bon."] * 70)  # ~2,100 characters, ~2,500 bytes
    expected = split_text(f"Echo: {text}", 1000, UTF8_BYTES)
    assert len(expected) >= 3

    said = messaging_text("instagram", IG_ACCOUNT, "long-reader", text)
    assert await post(parley, "instagram", said) == 200
    sends = await instagram_sim.wait_for_sends(len(expected), timeout=10)

    parts = [s.json["message"]["text"] for s in sends if s.json]
    assert parts == expected
    assert all(len(part.encode()) <= 1000 for part in parts)
    assert "".join(parts).replace(" ", "") == f"Echo: {text}".replace(" ", "")


async def test_messenger_answers_are_split_within_2000_characters(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    graph_sim.messenger_pages.add(PAGE)
    text = " ".join(["Crème brûlée à 5 €, très bon."] * 70)
    said = messaging_text("messenger", PAGE, "long-reader", text)
    assert await post(parley, "messenger", said) == 200
    sends = await graph_sim.wait_for_sends(2, timeout=10)
    parts = [s.json["message"]["text"] for s in sends if s.json]
    assert parts == split_text(f"Echo: {text}", 2000)
    assert len(parts[0].encode()) > 1000  # characters, not bytes
