"""Messenger and Instagram webhooks → neutral values, from the real samples in fixtures/ and
from the odd shapes Meta has been seen to send."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from parley.channels import instagram, messenger
from parley.channels.base import ParsedWebhook
from parley.errors import BadPayload
from tests.factories import FIXTURES, body_bytes, messaging_body, sample

INSTAGRAM_SAMPLES = sorted(p.name for p in (FIXTURES / "instagram").glob("*.json"))
MESSENGER_SAMPLES = sorted(p.name for p in (FIXTURES / "messenger").glob("*.json"))


def ig(name: str) -> ParsedWebhook:
    return instagram.channel.parse((FIXTURES / "instagram" / name).read_bytes())


def fb(name: str) -> ParsedWebhook:
    return messenger.channel.parse((FIXTURES / "messenger" / name).read_bytes())


@pytest.mark.parametrize("name", INSTAGRAM_SAMPLES)
def test_every_instagram_sample_parses_whole(name: str) -> None:
    parsed = ig(name)
    assert parsed.skipped == 0
    assert len(parsed.messages) + len(parsed.events) + len(parsed.statuses) == 1


@pytest.mark.parametrize("name", MESSENGER_SAMPLES)
def test_every_messenger_sample_parses_whole(name: str) -> None:
    parsed = fb(name)
    assert parsed.skipped == 0
    assert len(parsed.messages) + len(parsed.events) + len(parsed.statuses) >= 1


def test_instagram_text_names_the_account_and_the_igsid() -> None:
    (message,) = ig("instagram_login_text.json").messages
    assert (message.channel, message.account_external_id) == ("instagram", "17841400538867190")
    assert (message.user_id, message.phone, message.kind, message.text) == (
        "1129842642640637",
        None,
        "text",
        "oi",
    )
    assert message.needs_reply
    assert message.channel_message_id.startswith("aWdfZAG1faXRlbTox")
    assert message.timestamp == datetime(2025, 11, 1, 21, 5, 46, 380000, tzinfo=UTC)
    assert message.payload["text"] == "oi"


def test_story_reply_is_answered_knowing_the_story() -> None:
    (message,) = ig("story_reply.json").messages
    assert message.kind == "story_reply"
    assert message.text == "[Replying to your story] Hello story"
    assert message.needs_reply
    (story,) = message.media
    assert story.kind == "story" and story.url and "asset_id=18040775032372871" in story.url


def test_story_mention_share_and_image_carry_their_urls() -> None:
    (mention,) = ig("story_mention.json").messages
    assert (mention.kind, mention.text, mention.needs_reply) == (
        "story_mention",
        "[Mentioned you in their story]",
        True,
    )
    assert [(m.kind, m.url) for m in mention.media] == [("story_mention", "https://story-url")]
    (share,) = ig("share_attachment.json").messages
    assert (share.kind, share.text) == ("share", "[Shared a post]")
    (image,) = ig("image_attachment.json").messages
    assert (image.kind, image.text, image.needs_reply) == ("image", None, True)
    assert image.media[0].kind == "image"
    assert image.media[0].url and image.media[0].url.startswith("https://lookaside.fbsbx.com/")


def test_a_heart_or_a_like_is_not_waiting_for_an_answer() -> None:
    (heart,) = ig("sticker_like_heart.json").messages
    assert (heart.kind, heart.text, heart.needs_reply, heart.media) == ("sticker", "❤️", False, ())
    (thumbs,) = fb("sticker_thumbs_up.json").messages
    assert (thumbs.kind, thumbs.needs_reply) == ("sticker", False)
    assert [m.kind for m in thumbs.media] == ["sticker"]


def test_postbacks_and_quick_replies_read_as_what_the_customer_chose() -> None:
    (postback,) = fb("postback_get_started.json").messages
    assert (postback.kind, postback.text, postback.user_id) == (
        "postback",
        "postback title",
        "5678",
    )
    # No mid of its own: an id of Parley's, the same on every redelivery.
    assert postback.channel_message_id == "parley:postback:5678:1459991487970"
    assert fb("postback_get_started.json").messages[0].channel_message_id == (
        postback.channel_message_id
    )
    (ig_postback,) = ig("postback_doc_example.json").messages
    assert ig_postback.channel_message_id == "parley:postback:<MESSAGE_ID>"
    assert ig_postback.user_id == "<INSTAGRAM_SCOPED_ID>"
    assert ig_postback.text == "<USER_SELECTED_ICEBREAKER_OPTION_OR_CTA_BUTTON>"
    (quick,) = fb("quick_reply.json").messages
    assert (quick.kind, quick.text) == ("quick_reply", "Red")
    assert quick.payload["quick_reply"] == {"payload": "MY_PAYLOAD"}


def test_a_postback_without_title_reads_as_its_payload() -> None:
    item = {"sender": {"id": "u1"}, "recipient": {"id": "1000000001"}, "timestamp": 1700000000000}
    item["postback"] = {"payload": "ORDER_STATUS"}
    parsed = messenger.channel.parse(body_bytes(messaging_body("messenger", "1000000001", [item])))
    assert parsed.messages[0].text == "ORDER_STATUS"


def test_echoes_name_the_customer_on_either_side() -> None:
    (echo,) = ig("echo_ig_reel.json").events
    assert (echo.kind, echo.account_external_id, echo.user_id) == (
        "echo",
        "17841478341580264",
        "1180226157355226",
    )
    assert [m.kind for m in echo.media] == ["ig_reel"]
    assert echo.media[0].caption and echo.media[0].caption.startswith("VIP King 👑")
    # This capture names the page as the recipient: the customer is the other side.
    (swapped,) = fb("echo.json").events
    assert (swapped.kind, swapped.user_id, swapped.channel_message_id) == (
        "echo",
        "5678",
        "qT7ywaK",
    )


def test_edits_deletions_reactions_and_reads_are_events() -> None:
    (edit,) = ig("message_edit.json").events
    assert (edit.kind, edit.user_id, edit.text) == ("edit", "2182294425935229", None)
    (delete,) = ig("deleted_message.json").events
    assert (delete.kind, delete.channel_message_id, delete.user_id) == (
        "delete",
        "external_id",
        "5678",
    )
    (reaction,) = ig("reaction_dashboard_test.json").events
    assert (reaction.kind, reaction.channel_message_id, reaction.reaction) == (
        "reaction",
        "random_mid",
        "❤️",
    )
    (seen,) = ig("seen_doc_example.json").events
    assert (seen.kind, seen.channel_message_id, seen.watermark) == ("read", "<MESSAGE_ID>", None)
    (read,) = fb("read.json").events
    assert (read.kind, read.channel_message_id, read.user_id) == ("read", None, "USER_ID")
    assert read.watermark == datetime(2016, 3, 22, 17, 47, 36, 253000, tzinfo=UTC)


def test_messenger_deliveries_are_statuses_of_our_messages() -> None:
    (status,) = fb("delivery.json").statuses
    assert (status.channel_message_id, status.status, status.recipient) == (
        "mid.1458668856218:ed81099e15d3f4f233",
        "delivered",
        "5678",
    )


def test_two_entries_are_two_pages() -> None:
    parsed = fb("batch_two_entries.json")
    assert [(m.account_external_id, m.text) for m in parsed.messages] == [
        ("1895382890692545", "test 1"),
        ("189538289069256", "test 2"),
    ]


def item(**event: Any) -> dict[str, Any]:
    return {
        "sender": {"id": "u1"},
        "recipient": {"id": "17841400000000009"},
        "timestamp": 1700000000000,
        **event,
    }


def parse_items(*items: Any) -> ParsedWebhook:
    return instagram.channel.parse(
        body_bytes(messaging_body("instagram", "17841400000000009", list(items)))
    )


def test_odd_items_are_skipped_and_the_rest_arrive() -> None:
    parsed = parse_items(
        item(message={"text": "no mid"}),
        {"recipient": {"id": "17841400000000009"}, "message": {"mid": "m.1", "text": "no sender"}},
        item(message={"mid": "m.2", "text": "fine"}),
        item(message="not an object"),
        "not an item",
        item(message_edit={"text": "no mid"}),
        item(read={}),
        item(message={"mid": "m.3", "text": "also fine"}, timestamp="nonsense"),
        item(referral={"ref": "ad", "source": "ADS", "type": "OPEN_THREAD"}),
    )
    assert [m.text for m in parsed.messages] == ["fine"]
    assert parsed.skipped == 7
    assert parsed.events == []


def test_string_flags_and_second_timestamps_from_older_docs_and_tests() -> None:
    parsed = parse_items(
        item(message={"mid": "m.1", "is_deleted": "true"}, timestamp="1527459824"),
        item(message={"mid": "m.2", "is_echo": "true", "text": "from the app"}),
    )
    delete, echo = parsed.events
    assert delete.kind == "delete"
    assert delete.timestamp == datetime(2018, 5, 27, 22, 23, 44, tzinfo=UTC)
    assert (echo.kind, echo.text) == ("echo", "from the app")


def test_reads_and_edits_without_sender_still_name_their_message() -> None:
    parsed = parse_items(
        {"timestamp": 1780396616736, "read": {"mid": "m.ours"}},
        {"timestamp": 1780396616736, "message_edit": {"mid": "m.theirs", "text": "new"}},
        item(reaction={"mid": "m.ours", "action": "unreact", "reaction": "love"}),
    )
    read, edit, unreact = parsed.events
    assert (read.user_id, read.channel_message_id) == (None, "m.ours")
    assert (edit.user_id, edit.text) == (None, "new")
    assert (unreact.kind, unreact.reaction) == ("reaction", None)


def test_standby_threads_and_unknown_attachments_are_not_errors() -> None:
    body = messaging_body(
        "instagram",
        "17841400000000009",
        [
            item(
                message={
                    "mid": "m.1",
                    "attachments": [
                        {"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/x"}},
                        "odd",
                        {"type": "ephemeral"},
                    ],
                }
            )
        ],
    )
    body["entry"][0]["standby"] = [item(message={"mid": "m.2", "text": "for another app"})]
    parsed = instagram.channel.parse(body_bytes(body))
    (message,) = parsed.messages
    assert parsed.skipped == 0
    assert [m.kind for m in message.media] == ["image"]


@pytest.mark.parametrize(
    ("body", "channel"),
    [
        (b"{nope", instagram.channel),
        (b"[]", instagram.channel),
        (json.dumps({"object": "page", "entry": []}).encode(), instagram.channel),
        (json.dumps({"object": "instagram", "entry": []}).encode(), messenger.channel),
        (json.dumps({"object": "page", "entry": {"id": "1"}}).encode(), messenger.channel),
    ],
)
def test_a_body_that_is_not_the_channels_is_refused(body: bytes, channel: Any) -> None:
    with pytest.raises(BadPayload):
        channel.parse(body)


def test_the_whatsapp_sample_is_no_messenger_webhook() -> None:
    with pytest.raises(BadPayload):
        messenger.channel.parse(body_bytes(sample("whatsapp/text.json")))
