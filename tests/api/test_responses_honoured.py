"""Nothing the official SDK can send to `responses.create` is silently dropped: `store: false`,
`text.format`, `reasoning` and `top_p` are honoured, everything else is a 400 naming it, a
response deleted while it streams still ends its stream and is recorded, and a cancel marked
on another replica stops the turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.queries.responses import set_status
from parley.testing import OpenAISimulator
from tests.api.test_responses import client, token, upstream_bodies
from tests.conftest import Parley, Store

__all__ = ["client", "token"]  # the fixtures, shared with test_responses


async def usage_requests(parley: Parley) -> list[tuple[int, int]]:
    return await parley.rows("SELECT requests, output_tokens FROM usage_user_daily")


async def test_store_false_is_answered_counted_and_never_retrievable(
    client: AsyncOpenAI, parley: Parley
) -> None:
    response = await client.responses.create(model="default", input="secret", store=False)

    assert response.status == "completed" and response.store is False
    assert response.output_text == "Echo: secret"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(
            model="default", input="again", previous_response_id=response.id
        )
    assert await parley.rows("SELECT count(*) FROM responses") == [(0,)]
    # Usage is counted, and the turn's messages stay in Parley's own store for audit.
    assert response.usage is not None
    assert await usage_requests(parley) == [(1, response.usage.output_tokens)]
    texts = await parley.rows("SELECT text FROM messages ORDER BY sequence_no")
    assert texts == [("secret",), ("Echo: secret",)]


async def test_store_false_streamed_ends_and_is_not_retrievable(client: AsyncOpenAI) -> None:
    stream = await client.responses.create(model="default", input="quiet", store=False, stream=True)
    events = [event async for event in stream]
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "Echo: quiet"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(final.response.id)


async def test_store_false_cannot_be_background(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="default", input="x", store=False, background=True)
    assert caught.value.param == "background"  # type: ignore[attr-defined]
    assert upstream_bodies(openai_sim) == []


async def test_text_format_reasoning_and_top_p_reach_the_upstream_and_the_response(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    text = {"format": {"type": "json_schema", "name": "trip", "schema": schema, "strict": True}}
    response = await client.responses.create(
        model="default",
        input="Lisbon",
        text=text,  # type: ignore[arg-type]
        reasoning={"effort": "low"},
        top_p=0.5,
    )

    assert json.loads(response.output_text) == {"city": "Echo: Lisbon", "days": 0}
    (body,) = upstream_bodies(openai_sim)
    assert body["text"] == text
    assert body["reasoning"] == {"effort": "low"}
    assert body["top_p"] == 0.5
    for seen in (response, await client.responses.retrieve(response.id)):
        assert seen.text is not None and seen.text.format is not None
        assert seen.text.format.type == "json_schema"
        assert seen.text.format.name == "trip"  # type: ignore[union-attr]
        assert seen.reasoning is not None and seen.reasoning.effort == "low"
        assert seen.top_p == 0.5


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"user": "u-1"}, "user"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"top_logprobs": 5}, "top_logprobs"),
        ({"max_output_tokens": 2**70}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 2}, "top_p"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "http://169.254.169.254/x"}
                        ],
                    }
                ]
            },
            "input[0].content[0].image_url",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}],
                    }
                ]
            },
            "input[0].content[0].image_url",
        ),
    ],
)
async def test_what_is_not_honoured_is_a_400_naming_it(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, fields: dict[str, object], param: str
) -> None:
    sent: dict[str, object] = {"model": "default", "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(**sent)  # type: ignore[call-overload]
    assert caught.value.param == param  # type: ignore[attr-defined]
    assert upstream_bodies(openai_sim) == []


async def test_defaults_of_unsupported_settings_are_accepted(client: AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="default",
        input="hi",
        parallel_tool_calls=True,
        truncation="disabled",
        include=[],
        service_tier="auto",
    )
    assert response.status == "completed"


async def test_delete_while_streaming_ends_the_stream_and_records_the_turn(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    openai_sim.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(20))
    stream = await client.responses.create(model="default", input=words, stream=True)
    kinds: list[str] = []

    async def read() -> None:
        response_id = ""
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta" and len(kinds) < 6:
                await client.responses.delete(response_id)  # mid-answer

    await asyncio.wait_for(read(), 15)
    assert kinds[-1] == "response.completed"
    rows = await parley.rows("SELECT direction, text FROM messages ORDER BY sequence_no")
    assert rows == [("in", words), ("out", f"Echo: {words}")]
    assert (await usage_requests(parley))[0][0] == 1
    assert await parley.rows("SELECT count(*) FROM responses") == [(0,)]


async def test_cancel_marked_by_another_replica_stops_the_turn(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley, store: Store
) -> None:
    openai_sim.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(400))  # ~20 s of deltas, unless stopped
    stream = await client.responses.create(
        model="default", input=words, stream=True, background=True
    )
    kinds: list[str] = []
    final: Any = None

    async def read() -> None:
        nonlocal final
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta" and kinds.count(event.type) == 1:
                # What POST …/cancel does on a replica that does not run the turn: mark the row.
                async with AsyncSession(store.engine) as session:
                    assert await set_status(session, response_id=final, status="cancelled")
                    await session.commit()
            if event.type == "response.created":
                final = event.response.id
            if event.type in ("response.completed", "response.failed"):
                final = event.response

    await asyncio.wait_for(read(), 10)  # well before the answer would have finished
    assert kinds[-1] == "response.failed"
    assert final.status == "cancelled"
    assert (await client.responses.retrieve(final.id)).status == "cancelled"
    rows = await parley.rows("SELECT direction FROM messages WHERE direction = 'out'")
    assert rows == []


async def test_a_turn_that_ends_after_its_response_was_closed_stores_nothing(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley, store: Store
) -> None:
    openai_sim.latency = 0.5
    created = asyncio.create_task(client.responses.create(model="default", input="too late"))
    await openai_sim.wait_for_requests(1, path="/v1/responses")
    # Meanwhile another process closed it (as its sweep closes one whose process seems gone).
    [(response_id,)] = await parley.rows("SELECT id FROM responses")
    async with AsyncSession(store.engine) as session:
        assert await set_status(session, response_id=response_id, status="failed")
        await session.commit()

    answered = await asyncio.wait_for(created, 10)
    assert answered.status == "failed"
    assert (await client.responses.retrieve(response_id)).status == "failed"
    # The answer came too late: none of the turn is stored, and nothing is counted.
    assert await parley.rows("SELECT count(*) FROM messages") == [(0,)]
    assert await usage_requests(parley) == []
    assert await parley.rows("SELECT last_response_id FROM conversations") == [(None,)]
