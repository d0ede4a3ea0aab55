"""Builders of webhook bodies and signed requests, from the real samples in fixtures/."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.base import InboundMessage
from parley.channels.signature import sign
from parley.store.models import Message

FIXTURES = Path(__file__).parent / "fixtures" / "payloads"
APP_SECRET = "test-app-secret"
INSTAGRAM_APP_SECRET = "test-instagram-app-secret"
VERIFY_TOKEN = "test-verify-token"
PHONE_NUMBER_ID = "106540352242922"


def sample(name: str) -> dict[str, Any]:
    """A real webhook body from fixtures/payloads, e.g. ``sample("whatsapp/text.json")``."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def signed_headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}


def new_wamid() -> str:
    return f"wamid.test{uuid.uuid4().hex}"


def whatsapp_texts(
    phone: str, texts: list[str], *, phone_number_id: str = PHONE_NUMBER_ID, name: str = "Ana"
) -> dict[str, Any]:
    """The real text sample carrying `texts` from `phone`, several messages in one change."""
    payload = sample("whatsapp/text.json")
    value = payload["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = phone_number_id
    value["contacts"] = [{"profile": {"name": name}, "wa_id": phone}]
    template = value["messages"][0]
    value["messages"] = []
    for text in texts:
        message = copy.deepcopy(template)
        message["from"] = phone
        message["id"] = new_wamid()
        message["timestamp"] = str(int(time.time()))
        message["text"] = {"body": text}
        value["messages"].append(message)
    return payload


def whatsapp_batch(phones: list[str], texts: list[str]) -> dict[str, Any]:
    """One webhook as Meta batches them: `texts[n]` from `phones[n % len(phones)]`, one change
    per customer holding that customer's messages in order."""
    payload = whatsapp_texts(phones[0], [])
    payload["entry"][0]["changes"] = [
        whatsapp_texts(phone, texts[i :: len(phones)])["entry"][0]["changes"][0]
        for i, phone in enumerate(phones)
    ]
    return payload


def whatsapp_sample_from(
    name: str, phone: str, *, media_id: str | None = None, **content: Any
) -> dict[str, Any]:
    """The real sample `whatsapp/<name>` sent by `phone` with a fresh message id; its file's
    media id set to `media_id` (one the Graph simulator serves), other fields of its
    content (`caption`, `filename`…) overridden by `content`."""
    payload = sample(f"whatsapp/{name}")
    value = payload["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = PHONE_NUMBER_ID
    value["contacts"] = [{"profile": {"name": "Ana"}, "wa_id": phone}]
    message = value["messages"][0]
    message["from"], message["id"] = phone, new_wamid()
    message["timestamp"] = str(int(time.time()))
    file = message[message["type"]]
    if media_id is not None:
        file["id"] = media_id
        file.pop("url", None)  # the media id is what Parley downloads by
    if content:
        file.update(content)
    return payload


def inbound_text(
    channel_message_id: str, body: str = "hi", *, phone: str | None, user_id: str | None = None
) -> InboundMessage:
    """A parsed WhatsApp text, for tests below the HTTP door."""
    return InboundMessage(
        channel="whatsapp",
        account_external_id=PHONE_NUMBER_ID,
        channel_message_id=channel_message_id,
        user_id=user_id,
        phone=phone,
        contact_name="Ana",
        contact_username=None,
        kind="text",
        text=body,
        needs_reply=True,
        timestamp=datetime.now(UTC),
    )


def new_mid() -> str:
    return f"m_test{uuid.uuid4().hex}"


def messaging_text(
    channel: str, account: str, user: str, text: str, *, mid: str | None = None
) -> dict[str, Any]:
    """A Messenger (``page``) or Instagram text from `user` to `account`, shaped as the real
    samples are."""
    item = {
        "sender": {"id": user},
        "recipient": {"id": account},
        "timestamp": int(time.time() * 1000),
        "message": {"mid": mid or new_mid(), "text": text},
    }
    return messaging_body(channel, account, [item])


def messaging_body(channel: str, account: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A webhook body of one entry carrying `items` as its ``messaging``."""
    return {
        "object": "page" if channel == "messenger" else "instagram",
        "entry": [{"id": account, "time": int(time.time() * 1000), "messaging": items}],
    }


def message_ids(payload: dict[str, Any]) -> list[str]:
    return [
        message["id"]
        for entry in payload["entry"]
        for change in entry["changes"]
        for message in change["value"].get("messages", [])
    ]


async def fresh_window(window_s: int = 60) -> None:
    """Start in a new rate-limit window when this one is about to end (windows are minutes
    of the clock), so that a test's few requests all count in one window."""
    left = window_s - time.time() % window_s
    if left < 3:
        await asyncio.sleep(left + 0.05)


async def last_reply_ids(session: AsyncSession, conversation_id: int, count: int) -> list[int]:
    """The ids of the conversation's last `count` replies (what one turn stored), in order."""
    rows = await session.scalars(
        select(Message.id)
        .where(Message.conversation_id == conversation_id, Message.direction == "out")
        .order_by(Message.sequence_no.desc())
        .limit(count)
    )
    return list(rows)[::-1]
