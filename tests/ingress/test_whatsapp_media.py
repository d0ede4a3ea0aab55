"""Media end to end: real WhatsApp samples carrying files, signed and posted to a running
Parley; the files served by the Graph simulator, the model and transcription by the OpenAI
simulator; what the model was sent, what the customer got and what the store kept, read back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.conftest import WHATSAPP_TOKEN, MakeParley, Parley
from tests.factories import body_bytes, sample, signed_headers, whatsapp_sample_from

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 4
VOICE = b"OggS\x00\x02" + bytes(range(200))


async def post(parley: Parley, payload: dict[str, Any]) -> None:
    body = body_bytes(payload)
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


def model_inputs(openai_sim: OpenAISimulator) -> list[Any]:
    return [r.json["input"] for r in openai_sim.response_requests if isinstance(r.json, dict)]


def developer_notes(model_input: list[dict[str, Any]]) -> str:
    return " ".join(str(i["content"]) for i in model_input if i.get("role") == "developer")


async def test_an_image_reaches_the_model_with_its_caption_as_text(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    media_id = graph_sim.media.add(JPEG, "image/jpeg")
    payload = whatsapp_sample_from(
        "image.json", "34600000101", media_id=media_id, caption="Is this the blue one?"
    )

    await post(parley, payload)
    await graph_sim.wait_for_sends(1, timeout=10)

    data_url = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    assert openai_sim.images == [{"type": "input_image", "image_url": data_url}]
    (model_input,) = model_inputs(openai_sim)
    assert model_input[0]["role"] == "user"
    assert model_input[0]["content"][0] == {"type": "input_text", "text": "Is this the blue one?"}
    # The caption is what the customer said: the agent answers it like text.
    assert graph_sim.texts_to("34600000101") == ["Echo: Is this the blue one?"]
    lookup = graph_sim.requests_to(f"/v26.0/{media_id}")[0]
    assert lookup.headers["authorization"] == f"Bearer {WHATSAPP_TOKEN}"
    await parley.wait_for_rows(
        "SELECT kind, status, text FROM messages WHERE direction='in'",
        [("image", "answered", "Is this the blue one?")],
    )
    ((meta,),) = await parley.rows("SELECT meta FROM messages WHERE direction='in'")
    stored = json.loads(meta) if isinstance(meta, str) else meta
    assert stored["media"] == [
        {
            "kind": "image",
            "media_id": media_id,
            "mime_type": "image/jpeg",
            "caption": "Is this the blue one?",
        }
    ]


@pytest.mark.parametrize(
    ("fault", "told"),
    [
        ("oversize", "the file is larger than we accept"),
        ("wrong_type", "the file is not of a type we can read"),
        ("foreign_host", "the download failed"),
        ("gone", "the download failed"),
    ],
)
async def test_an_image_that_cannot_be_loaded_is_described_and_answered_normally(
    make_parley: MakeParley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    openai_server: tuple[OpenAISimulator, ServerThread],
    fault: str,
    told: str,
) -> None:
    parley = make_parley(parley_media_max_bytes=4096)
    media_id = {
        "oversize": lambda: graph_sim.media.add(JPEG * 8, "image/jpeg", chunked=True),
        "wrong_type": lambda: graph_sim.media.add(b"<html></html>", "text/html"),
        # A lookup that points off Meta's hosts (here: the OpenAI simulator) is never followed.
        "foreign_host": lambda: graph_sim.media.add(
            JPEG, "image/jpeg", url=f"{openai_server[1].url}/stolen.jpg"
        ),
        "gone": lambda: "expired-media-id",
    }[fault]()

    await post(parley, whatsapp_sample_from("image.json", "34600000102", media_id=media_id))
    await graph_sim.wait_for_sends(1, timeout=10)

    assert openai_sim.images == []
    (model_input,) = model_inputs(openai_sim)
    said = model_input[0]["content"][0]["text"]
    assert said == f"[The customer sent an image, but it could not be loaded: {told}.]"
    assert "an image that could not be loaded" in developer_notes(model_input)
    # The customer gets the agent's answer, never the upstream's error or a fallback.
    (reply,) = graph_sim.texts_to("34600000102")
    assert reply.startswith("Echo: [The customer sent an image")
    assert openai_sim.requests_to("/stolen.jpg") == []
    await parley.wait_for_rows(
        "SELECT kind, status FROM messages WHERE direction='in'", [("image", "answered")]
    )


async def test_a_voice_note_is_transcribed_stored_and_answered_like_text(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = make_parley(parley_transcribe=True)
    media_id = graph_sim.media.add(VOICE, "audio/ogg; codecs=opus")
    openai_sim.transcripts.register(VOICE, "Where is my order 4411?")

    await post(parley, whatsapp_sample_from("audio_voice.json", "34600000103", media_id=media_id))
    await graph_sim.wait_for_sends(1, timeout=10)

    (heard,) = openai_sim.transcribed
    assert (heard.model, heard.filename, heard.data) == (
        "gpt-4o-mini-transcribe",
        "audio.ogg",
        VOICE,
    )
    (model_input,) = model_inputs(openai_sim)
    assert model_input[0]["content"] == [
        {"type": "input_text", "text": "[Voice note, transcribed:] Where is my order 4411?"}
    ]
    assert developer_notes(model_input) == ""
    assert graph_sim.texts_to("34600000103") == [
        "Echo: [Voice note, transcribed:] Where is my order 4411?"
    ]
    await parley.wait_for_rows(
        "SELECT kind, status, text FROM messages WHERE direction='in'",
        [("audio", "answered", "Where is my order 4411?")],
    )
    ((meta,),) = await parley.rows("SELECT meta FROM messages WHERE direction='in'")
    stored = json.loads(meta) if isinstance(meta, str) else meta
    assert stored["transcript"] == {"model": "gpt-4o-mini-transcribe"}
    assert stored["media"][0]["voice"] is True


async def test_a_voice_note_that_fails_to_transcribe_is_described(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = make_parley(parley_transcribe=True, openai_max_retries=0)
    media_id = graph_sim.media.add(VOICE, "audio/ogg")
    openai_sim.inject(500, times=1, path="/v1/audio/transcriptions")

    await post(parley, whatsapp_sample_from("audio_voice.json", "34600000104", media_id=media_id))
    await graph_sim.wait_for_sends(1, timeout=10)

    (model_input,) = model_inputs(openai_sim)
    assert model_input[0]["content"][0]["text"] == (
        "[The customer sent a voice note; it could not be transcribed.]"
    )
    assert "a voice note (it could not be transcribed)" in developer_notes(model_input)
    await parley.wait_for_rows(
        "SELECT kind, status, text FROM messages WHERE direction='in'",
        [("audio", "answered", None)],
    )


async def test_with_transcription_off_a_voice_note_is_described_not_downloaded(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    media_id = graph_sim.media.add(VOICE, "audio/ogg")

    await post(parley, whatsapp_sample_from("audio_voice.json", "34600000105", media_id=media_id))
    await graph_sim.wait_for_sends(1, timeout=10)

    (model_input,) = model_inputs(openai_sim)
    assert model_input[0]["content"][0]["text"] == (
        "[The customer sent a voice note; you cannot listen to audio.]"
    )
    assert "a voice note (you cannot listen to audio)" in developer_notes(model_input)
    assert graph_sim.media_downloads == [] and openai_sim.transcribed == []
    assert len(graph_sim.texts_to("34600000105")) == 1


async def test_documents_locations_contacts_and_stickers_are_described(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    phone = "34600000106"
    payload = whatsapp_sample_from("document.json", phone)
    messages = payload["entry"][0]["changes"][0]["value"]["messages"]
    for name in ("location.json", "contacts.json", "sticker.json"):
        messages += whatsapp_sample_from(name, phone)["entry"][0]["changes"][0]["value"]["messages"]

    await post(parley, payload)
    await graph_sim.wait_for_sends(1, timeout=10)

    (model_input,) = model_inputs(openai_sim)
    said = [
        item["content"] if isinstance(item["content"], str) else item["content"][0]["text"]
        for item in model_input
        if item["role"] == "user"
    ]
    assert said == [
        "[The customer sent a document: receipt.pdf (application/pdf).] my receipt",
        "[Location: Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 (37.4611978, -122.2164385)]",
        "[Contacts shared: Chandler Bing (+1 555-555-5555); Monica (+1 666-666-6666); "
        "Rachel Green (+1 777-777-7777)]",
        "[The customer sent a sticker.]",
    ]
    assert "a document (you cannot open files)" in developer_notes(model_input)
    # Nothing the agent cannot look at is downloaded.
    assert graph_sim.media_downloads == []
    await parley.wait_for_rows(
        "SELECT kind, status FROM messages WHERE direction='in' ORDER BY sequence_no",
        [
            ("document", "answered"),
            ("location", "answered"),
            ("contacts", "answered"),
            ("sticker", "answered"),
        ],
    )


async def test_local_history_names_an_earlier_image_instead_of_sending_it_again(
    make_parley: MakeParley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    parley = make_parley(parley_context="local")
    media_id = graph_sim.media.add(JPEG, "image/jpeg")
    phone = "34600000107"

    await post(parley, whatsapp_sample_from("image.json", phone, media_id=media_id, caption="mine"))
    await graph_sim.wait_for_sends(1, timeout=10)
    text = whatsapp_sample_from("image.json", phone)  # any sample: replaced by a text below
    message = text["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["image"]
    message.update(type="text", text={"body": "and in red?"})
    await post(parley, text)
    await graph_sim.wait_for_sends(2, timeout=10)

    _, second = model_inputs(openai_sim)
    assert len(openai_sim.images) == 1  # the first turn's
    assert "input_image" not in json.dumps(second)
    assert second[0] == {"role": "user", "content": "[image] mine"}
    assert second[-1] == {"role": "user", "content": "and in red?"}


async def test_the_unsupported_reply_is_kept_for_what_cannot_even_be_described(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> None:
    await post(parley, sample("whatsapp/order.json"))
    await graph_sim.wait_for_sends(1, timeout=10)
    assert graph_sim.sends[0].json["text"]["body"] == parley.settings.parley_unsupported_reply
    assert model_inputs(openai_sim) == []
