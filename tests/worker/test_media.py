"""The worker's media reader on a real store and the simulators: what a turn makes of the
files its messages carry, below the HTTP door."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from parley.channels.base import InboundMessage, Media
from parley.config import Settings
from parley.runtime import Runtime, build_runtime, close
from parley.store.direct import Reads
from parley.store.migrate import upgrade
from parley.store.queries.inbound import record_inbound
from parley.store.queries.turns import TurnWork, load_work
from parley.testing import GraphSimulator, OpenAISimulator
from parley.worker import media
from parley.worker.media import MAX_IMAGES_PER_TURN, MediaConfig, MediaReader
from tests.factories import PHONE_NUMBER_ID

JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 100
VOICE = b"OggS" + b"\x02" * 100


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    await upgrade(settings.database_url)
    runtime = build_runtime(settings.model_copy(update={"parley_transcribe": True}))
    yield runtime
    await close(runtime)


def inbound(message_id: str, media: Media) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_external_id=PHONE_NUMBER_ID,
        channel_message_id=message_id,
        user_id=None,
        phone="34600000201",
        contact_name="Ana",
        contact_username=None,
        kind=media.kind,
        text=media.caption,
        needs_reply=True,
        timestamp=datetime.now(UTC),
        media=(media,),
    )


async def stored_work(runtime: Runtime, messages: list[InboundMessage]) -> TurnWork:
    async with runtime.sessions() as session:
        (conversation_id,) = await record_inbound(session, messages=messages, correlation_id="c")
        await session.commit()
    return await waiting(runtime, conversation_id)


async def waiting(runtime: Runtime, conversation_id: int) -> TurnWork:
    work = await load_work(Reads(runtime.sessions, None), conversation_id=conversation_id)
    assert work is not None
    return work


def reader(runtime: Runtime, **config: object) -> MediaReader:
    return MediaReader(
        source=runtime.gateway,
        agent=runtime.agent,
        sessions=runtime.sessions,
        config=replace(MediaConfig(transcribe=True), **config),  # type: ignore[arg-type]
        concurrency=2,
    )


async def test_a_redone_turn_reuses_the_stored_transcript(
    runtime: Runtime, graph_sim: GraphSimulator, openai_sim: OpenAISimulator
) -> None:
    media_id = graph_sim.media.add(VOICE, "audio/ogg")
    openai_sim.transcripts.register(VOICE, "cancel my order")
    work = await stored_work(
        runtime, [inbound("wamid.voice", Media("audio", media_id=media_id, voice=True))]
    )

    (first,) = await reader(runtime).read(work)
    # The turn died before it stored an answer: the next one reads the message again.
    again = await waiting(runtime, work.conversation.id)
    (second,) = await reader(runtime).read(again)

    assert first.text == second.text == "cancel my order"
    assert first.notes == second.notes == ("[Voice note, transcribed:]",)
    assert len(openai_sim.transcribed) == 1
    assert len(graph_sim.media_downloads) == 1
    assert again.pending[0].text == "cancel my order"


async def test_a_burst_of_images_sends_only_the_first_few(
    runtime: Runtime, graph_sim: GraphSimulator
) -> None:
    count = MAX_IMAGES_PER_TURN + 1
    media_ids = [graph_sim.media.add(JPEG, "image/jpeg") for _ in range(count)]
    work = await stored_work(
        runtime,
        [inbound(f"wamid.img{i}", Media("image", media_id=m)) for i, m in enumerate(media_ids)],
    )

    read = await reader(runtime).read(work)

    assert [len(r.images) for r in read] == [1] * MAX_IMAGES_PER_TURN + [0]
    assert read[-1].notes == (
        "[The customer sent an image, but it could not be loaded: too many images at once.]",
    )
    assert len(graph_sim.media_downloads) == MAX_IMAGES_PER_TURN


async def test_images_past_the_request_budget_are_described(
    runtime: Runtime, graph_sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_image = len("data:image/jpeg;base64,") + len(base64.b64encode(JPEG))
    monkeypatch.setattr(media, "MAX_IMAGE_CHARS_PER_TURN", one_image + 10)
    first, second = (graph_sim.media.add(JPEG, "image/jpeg") for _ in range(2))
    work = await stored_work(
        runtime,
        [
            inbound("wamid.a", Media("image", media_id=first)),
            inbound("wamid.b", Media("image", media_id=second)),
        ],
    )

    read = await reader(runtime).read(work)

    assert [len(r.images) for r in read] == [1, 0]
    assert "too many images at once" in read[1].notes[0]
