"""WhatsApp webhook bodies (real samples in fixtures/payloads/whatsapp) → ParsedWebhook."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from parley.channels import whatsapp
from parley.channels.base import InboundMessage, Media, ParsedWebhook, StatusUpdate
from parley.errors import BadPayload

SAMPLES = Path(__file__).parent.parent / "fixtures" / "payloads" / "whatsapp"
BSUID = "US.13491208655302741918"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return data


def parse(payload: dict[str, Any]) -> ParsedWebhook:
    return whatsapp.parse(json.dumps(payload).encode())


def only_message(name: str) -> InboundMessage:
    parsed = parse(load(name))
    assert parsed.skipped == 0 and not parsed.statuses
    assert len(parsed.messages) == 1
    return parsed.messages[0]


def only_status(name: str) -> StatusUpdate:
    parsed = parse(load(name))
    assert parsed.skipped == 0 and not parsed.messages
    assert len(parsed.statuses) == 1
    return parsed.statuses[0]


def first_value(payload: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]
    return value


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_every_sample_parses_without_skips(path: Path) -> None:
    parsed = whatsapp.parse(path.read_bytes())
    assert parsed.skipped == 0
    assert parsed.messages or parsed.statuses
    for message in parsed.messages:
        assert message.channel == "whatsapp"
        assert message.timestamp.tzinfo is UTC
        assert message.payload["id"] == message.channel_message_id


def test_text() -> None:
    message = only_message("text.json")
    assert message == InboundMessage(
        channel="whatsapp",
        account_external_id="106540352242922",
        channel_message_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        user_id=None,
        phone="16505551234",
        contact_name="Sheena Nelson",
        contact_username=None,
        kind="text",
        text="Does it come in another color?",
        needs_reply=True,
        timestamp=datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC),
        payload=first_value(load("text.json"))["messages"][0],
        reply_to=None,
    )
    assert message.contact_key == "16505551234"


def test_integer_timestamp_is_accepted() -> None:
    payload = load("text.json")
    first_value(payload)["messages"][0]["timestamp"] = 1749416383
    message = parse(payload).messages[0]
    assert message.timestamp == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)


def test_batch_of_two_messages_keeps_order() -> None:
    parsed = parse(load("batch_multiple_messages.json"))
    assert [(m.channel_message_id, m.kind) for m in parsed.messages] == [
        ("wamid.GBGX2323902", "text"),
        ("wamid.OMGReaction", "reaction"),
    ]
    text, reaction = parsed.messages
    assert text.text == "Hello from a text message"
    assert (text.phone, text.contact_name, text.account_external_id) == (
        "1234567890",
        "Sam Sample",
        "987654321",
    )
    assert reaction.needs_reply is False and reaction.text is None


def test_batch_of_changes_ignores_user_preferences_and_infers_location() -> None:
    parsed = parse(load("batch_multiple_changes.json"))
    assert parsed.skipped == 0
    assert [(m.channel_message_id, m.kind) for m in parsed.messages] == [
        ("wamid.TEXT123", "text"),
        ("wamid.LOC789", "location"),
        ("wamid.RXN001", "reaction"),
        ("wamid.STK002", "sticker"),
    ]
    location = parsed.messages[1]
    assert "type" not in location.payload
    assert location.text == "[Location: San Francisco, Market Street (37.7749, -122.4194)]"
    assert location.needs_reply is True
    assert [m.needs_reply for m in parsed.messages] == [True, True, False, True]


def test_bsuid_text_without_phone() -> None:
    message = only_message("bsuid_text_username_no_phone.json")
    assert message.user_id == BSUID
    assert message.phone is None
    assert message.contact_name == "Sheena Nelson"
    assert message.contact_username == "@realsheenanelson"
    assert message.text == "Does it come in another color?"
    assert message.contact_key == BSUID


def test_bsuid_from_contact_when_message_has_a_phone() -> None:
    message = only_message("image.json")
    assert (message.user_id, message.phone) == (BSUID, "972987654321")


@pytest.mark.parametrize(
    ("name", "status", "recipient", "account"),
    [
        ("status_sent.json", "sent", "16505551234", "106540352242922"),
        ("status_delivered.json", "delivered", "972987654321", "1122334455667"),
        ("status_read.json", "read", "972987654321", "1122334455667"),
        ("bsuid_status_delivered_no_phone.json", "delivered", BSUID, "106540352242922"),
    ],
)
def test_statuses(name: str, status: str, recipient: str, account: str) -> None:
    update = only_status(name)
    assert (update.channel, update.status, update.recipient) == ("whatsapp", status, recipient)
    assert update.account_external_id == account
    assert update.errors == ()
    assert update.channel_message_id == first_value(load(name))["statuses"][0]["id"]


def test_status_sent_details() -> None:
    update = only_status("status_sent.json")
    assert update.channel_message_id == (
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
    )
    assert update.timestamp == datetime.fromtimestamp(1750030073, tz=UTC)


@pytest.mark.parametrize(
    ("name", "code"), [("status_failed_131026.json", 131026), ("status_failed_131049.json", 131049)]
)
def test_failed_status_carries_its_errors(name: str, code: int) -> None:
    update = only_status(name)
    assert update.status == "failed"
    assert len(update.errors) == 1
    assert update.errors[0]["code"] == code
    assert update.errors[0]["error_data"]["details"]


def test_reaction_needs_no_reply() -> None:
    message = only_message("reaction.json")
    assert (message.kind, message.text, message.needs_reply) == ("reaction", None, False)
    assert message.payload["reaction"]["emoji"] == "😮"


def test_unsupported_is_still_a_message() -> None:
    message = only_message("unsupported.json")
    assert (message.kind, message.text, message.needs_reply) == ("unsupported", None, True)
    assert message.payload["errors"][0]["code"] == 131051


@pytest.mark.parametrize(
    ("raw_type", "kind", "needs_reply"),
    [
        ("unknown", "unsupported", True),
        ("ephemeral", "unsupported", True),
        ("request_welcome", "unsupported", False),
        ("poll_v9", "unsupported", True),
    ],
)
def test_unknown_types_become_unsupported(raw_type: str, kind: str, needs_reply: bool) -> None:
    payload = load("text.json")
    message = first_value(payload)["messages"][0]
    message["type"] = raw_type
    del message["text"]
    parsed = parse(payload).messages[0]
    assert (parsed.kind, parsed.text, parsed.needs_reply) == (kind, None, needs_reply)


def test_interactive_button_reply_title() -> None:
    message = only_message("interactive_button_reply.json")
    assert (message.kind, message.text) == ("interactive", "Cancel")
    assert message.reply_to == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA"


def test_interactive_list_reply_title_and_description() -> None:
    message = only_message("interactive_list_reply.json")
    assert message.text == "Priority Mail Express — Next Day to 2 Days"


def test_interactive_flow_reply() -> None:
    payload = load("interactive_button_reply.json")
    first_value(payload)["messages"][0]["interactive"] = {
        "type": "nfm_reply",
        "nfm_reply": {"name": "flow", "body": "Sent", "response_json": '{"a": 1}'},
    }
    assert parse(payload).messages[0].text == "Sent"


def test_template_button_text() -> None:
    message = only_message("button_template_quick_reply.json")
    assert (message.kind, message.text, message.reply_to) == ("button", "title", "wamid.xyzxyz==")


def test_location_is_described() -> None:
    message = only_message("location.json")
    assert message.text == (
        "[Location: Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 (37.4611978, -122.2164385)]"
    )
    assert message.reply_to is None  # context only says "forwarded"


def test_system_message_needs_no_reply() -> None:
    message = only_message("system_user_changed_number.json")
    assert (message.kind, message.text, message.needs_reply) == ("system", None, False)
    assert (message.phone, message.contact_name) == ("972987654321", None)


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("image.json", Media("image", media_id="65463453", mime_type="image/jpeg")),
        (
            "audio_voice.json",
            Media(
                "audio",
                media_id="1234567890987654321",
                mime_type="audio/ogg; codecs=opus",
                voice=True,
            ),
        ),
        (
            "video.json",
            Media("video", media_id="765756756", mime_type="video/mp4", caption="caption"),
        ),
        (
            "document.json",
            Media(
                "document",
                media_id="622684793477189",
                url="https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=133...",
                mime_type="application/pdf",
                caption="my receipt",
                filename="receipt.pdf",
            ),
        ),
        ("sticker.json", Media("sticker", media_id="1234567890987654321", mime_type="image/webp")),
    ],
)
def test_media_messages_carry_their_file_and_caption_as_text(name: str, media: Media) -> None:
    message = only_message(name)
    assert (message.kind, message.needs_reply) == (media.kind, True)
    assert message.media == (media,)
    # A caption is what the customer wrote: the agent reads it as the message's text.
    assert message.text == media.caption


def test_a_media_message_without_an_id_or_url_carries_no_file() -> None:
    payload = load("image.json")
    del first_value(payload)["messages"][0]["image"]["id"]
    message = parse(payload).messages[0]
    assert (message.kind, message.media, message.text) == ("image", (), None)


def test_contacts_are_described_with_names_and_phones() -> None:
    message = only_message("contacts.json")
    assert message.kind == "contacts"
    assert message.text == (
        "[Contacts shared: Chandler Bing (+1 555-555-5555); Monica (+1 666-666-6666); "
        "Rachel Green (+1 777-777-7777)]"
    )


def test_order_has_no_text_yet() -> None:
    message = only_message("order.json")
    assert (message.kind, message.text, message.media) == ("order", None, ())


def test_caption_stays_in_payload() -> None:
    message = only_message("document.json")
    assert message.payload["document"]["caption"] == "my receipt"


def test_quoted_reply() -> None:
    message = only_message("reply_with_context.json")
    assert (message.text, message.reply_to) == ("replied text", "wamid.xyzxyz==")


def test_broken_items_are_skipped_and_counted_while_the_rest_parse() -> None:
    payload = load("batch_multiple_messages.json")
    value = first_value(payload)
    good_text, good_reaction = value["messages"]
    broken_time = {**copy.deepcopy(good_text), "id": "wamid.BAD1", "timestamp": "yesterday"}
    broken_time["text"]["body"] = "secret customer words"
    no_sender = {k: v for k, v in good_text.items() if k != "from"} | {"id": "wamid.BAD2"}
    value["contacts"].append({"profile": {"name": "Other"}, "wa_id": "999"})  # no single match
    value["messages"] = [good_text, broken_time, "not an object", no_sender, good_reaction]
    value["statuses"] = [{"id": "wamid.S", "status": "read"}, load_status()]

    with capture_logs() as logs:
        parsed = parse(payload)

    assert [m.channel_message_id for m in parsed.messages] == [
        "wamid.GBGX2323902",
        "wamid.OMGReaction",
    ]
    assert [s.status for s in parsed.statuses] == ["sent"]
    assert parsed.skipped == 4
    skipped = [entry for entry in logs if entry["event"] == "whatsapp.item_skipped"]
    assert len(skipped) == 4
    assert {entry["item"] for entry in skipped} == {"message", "status"}
    assert "secret customer words" not in repr(logs)


def load_status() -> dict[str, Any]:
    status: dict[str, Any] = first_value(load("status_sent.json"))["statuses"][0]
    return status


def test_odd_entries_and_changes_do_not_sink_the_batch() -> None:
    payload = load("text.json")
    payload["entry"].insert(0, "junk")
    payload["entry"][1]["changes"].insert(0, {"field": "messages", "value": "junk"})
    parsed = parse(payload)
    assert len(parsed.messages) == 1
    assert parsed.skipped == 2


def test_messages_without_phone_number_id_are_skipped() -> None:
    payload = load("batch_multiple_messages.json")
    del first_value(payload)["metadata"]["phone_number_id"]
    parsed = parse(payload)
    assert (parsed.messages, parsed.skipped) == ([], 2)


def test_other_fields_are_ignored_not_counted() -> None:
    payload = load("text.json")
    payload["entry"][0]["changes"][0]["field"] = "account_update"
    assert parse(payload) == ParsedWebhook()


def test_value_level_errors_are_logged_and_ignored() -> None:
    payload = load("text.json")
    value = first_value(payload)
    del value["messages"]
    value["errors"] = [{"code": 131052, "title": "Media download error"}]
    with capture_logs() as logs:
        parsed = parse(payload)
    assert parsed == ParsedWebhook()
    assert any(e["event"] == "whatsapp.value_errors" and e["codes"] == ["131052"] for e in logs)


def test_missing_or_null_object_is_tolerated() -> None:
    payload = load("text.json")
    payload["object"] = None
    assert len(parse(payload).messages) == 1
    del payload["object"]
    assert len(parse(payload).messages) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b'{"object": "page", "entry": []}',
        b'{"object": "whatsapp_business_account", "entry": {"id": 1}}',
    ],
    ids=["text", "bytes", "array", "string", "other-object", "entry-not-list"],
)
def test_bodies_that_are_not_whatsapp_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(BadPayload):
        whatsapp.parse(body)


def test_empty_entry_list_is_an_empty_batch() -> None:
    assert whatsapp.parse(b'{"object": "whatsapp_business_account", "entry": []}') == (
        ParsedWebhook()
    )
