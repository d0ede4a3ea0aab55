"""The worker's turn on a real store and the simulators, without the HTTP door."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from parley.config import Settings
from parley.runtime import Runtime, build_runtime, close
from parley.store.migrate import upgrade
from parley.store.models import Message
from parley.store.queries.inbound import record_inbound
from parley.testing import OpenAISimulator
from tests.factories import inbound_text


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    await upgrade(settings.database_url)
    runtime = build_runtime(settings)
    yield runtime
    await close(runtime)


async def test_a_message_whose_turns_keep_dying_is_dead_lettered(
    runtime: Runtime, openai_sim: OpenAISimulator
) -> None:
    async with runtime.sessions() as session:
        (conversation_id,) = await record_inbound(
            session,
            messages=[
                inbound_text("wamid.poison", "poison", phone="34600000091"),
                inbound_text("wamid.ok", "fine", phone="34600000091"),
            ],
            correlation_id="c",
        )
        # The first message's turns were started three times and never finished.
        await session.execute(
            update(Message).where(Message.channel_message_id == "wamid.poison").values(attempts=3)
        )
        await session.commit()

    await runtime.processor.process(conversation_id)

    async with runtime.sessions() as session:
        rows = (
            await session.execute(
                select(Message.direction, Message.status, Message.text, Message.error).order_by(
                    Message.sequence_no
                )
            )
        ).all()
    poison, fine, fallback, answer = rows
    assert (poison.status, poison.error) == (
        "failed",
        "dead-lettered after 3 turns that did not finish",
    )
    assert fallback.direction == "out" and fallback.text == runtime.settings.parley_fallback_reply
    # The healthy message behind it is still answered, by the model, after the dead letter.
    assert fine.status == "answered"
    assert answer.text == "Echo: fine"
    inputs = [r.json["input"] for r in openai_sim.requests_to("/v1/responses")]
    assert len(inputs) == 1 and "poison" not in str(inputs[0])
