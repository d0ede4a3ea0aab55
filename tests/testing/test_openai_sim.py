"""The OpenAI simulator, proven with the official SDK in strict validation mode: if the SDK
parses it, Parley's client code will see what it would see from OpenAI."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from parley.testing import OpenAISimulator, ServerThread, SimTurn


@pytest.fixture
def running(
    openai_server: tuple[OpenAISimulator, ServerThread],
) -> tuple[OpenAISimulator, ServerThread]:
    return openai_server


@pytest.fixture
def sim(openai_sim: OpenAISimulator) -> OpenAISimulator:
    return openai_sim


@pytest.fixture
def base_url(running: tuple[OpenAISimulator, ServerThread]) -> str:
    return running[1].url + "/v1"


def make_client(base_url: str, **options: Any) -> AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return AsyncOpenAI(
        base_url=base_url, api_key="test", _strict_response_validation=True, **options
    )


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with make_client(base_url) as client:
        yield client


async def test_string_input_is_echoed_with_a_full_response(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    raw = await client.responses.with_raw_response.create(
        model="gpt-5-mini", input="hello there", instructions="Be brief.", metadata={"k": "v"}
    )
    response = raw.parse()

    assert response.output_text == "Echo: hello there"
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.error is None
    assert str(response.output[0].id).startswith("msg_")
    assert response.metadata == {"k": "v"} and response.instructions == "Be brief."
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.input_tokens_details.cache_write_tokens == 0
    total = response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.total_tokens == total
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0
    for name in ("remaining-tokens", "reset-requests", "reset-tokens"):
        assert raw.headers[f"x-ratelimit-{name}"]
    (recorded,) = sim.requests
    assert recorded.status == 200 and recorded.json is not None
    assert recorded.json["input"] == "hello there"
    assert recorded.headers["authorization"] == "Bearer test"


async def test_list_input_reaches_the_reply_callable(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    seen: list[SimTurn] = []

    def reply(turn: SimTurn) -> str:
        seen.append(turn)
        return " | ".join(turn.user_texts)

    sim.reply = reply
    items: Any = [
        {"role": "developer", "content": "context"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "first"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
        {"role": "user", "content": "second"},
    ]
    response = await client.responses.create(
        model="gpt-5-mini",
        input=items,
        prompt={"id": "pmpt_123", "version": "3", "variables": {"shop": "Acme"}},
        safety_identifier="user-hash",
        prompt_cache_key="tenant-1",
        temperature=0.2,
        max_output_tokens=200,
        truncation="auto",
        store=True,
    )

    assert response.output_text == "first | second"
    assert response.prompt is not None and response.prompt.id == "pmpt_123"
    assert response.safety_identifier == "user-hash" and response.temperature == 0.2
    assert seen[0].history == [] and seen[0].body["prompt_cache_key"] == "tenant-1"
    items = await client.responses.input_items.list(response.id, order="asc")
    assert [item.type for item in items.data] == ["message"] * 3
    assert all(item.id for item in items.data)


async def test_conversation_keeps_history_and_lists_items(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    histories: list[list[str]] = []

    def reply(turn: SimTurn) -> str:
        histories.append(turn.history_texts)
        return f"reply {len(histories)}"

    sim.reply = reply
    conversation = await client.conversations.create(
        metadata={"customer": "42"}, items=[{"role": "user", "content": "My name is Ana."}]
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"customer": "42"}

    first = await client.responses.create(
        model="gpt-5-mini", input="hi", conversation=conversation.id
    )
    second = await client.responses.create(
        model="gpt-5-mini", input="who am I?", conversation={"id": conversation.id}
    )

    assert histories == [["My name is Ana."], ["My name is Ana.", "hi", "reply 1"]]
    assert first.conversation is not None and first.conversation.id == conversation.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens_details.cached_tokens > 0
    assert second.usage.input_tokens > first.usage.input_tokens
    page = await client.conversations.items.list(conversation.id, order="asc")
    assert [(item.type, getattr(item, "role", None)) for item in page.data] == [
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    newest = await client.conversations.items.list(conversation.id, limit=2)
    assert newest.has_more and newest.data[0].id == page.data[-1].id
    fetched = await client.conversations.retrieve(conversation.id)
    assert fetched.id == conversation.id
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)


async def test_previous_response_chain_and_stored_responses(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    sim.reply = lambda turn: f"{len(turn.history)} items before"
    first = await client.responses.create(model="gpt-5-mini", input="one")
    second = await client.responses.create(
        model="gpt-5-mini", input="two", previous_response_id=first.id
    )
    assert first.output_text == "0 items before"
    assert second.output_text == "2 items before"
    assert second.previous_response_id == first.id

    again = await client.responses.retrieve(second.id)
    assert again.output_text == second.output_text and again.id == second.id
    inputs = await client.responses.input_items.list(second.id)
    assert [item.type for item in inputs.data] == ["message"]
    # The SDK's delete() returns None, discarding the body; read it raw.
    raw = await client.responses.with_raw_response.delete(second.id)
    assert raw.http_response.json() == {
        "id": second.id,
        "object": "response.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list(second.id)


async def test_unknown_ids_fail_like_openai(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing_conversation:
        await client.responses.create(model="m", input="x", conversation="conv_nope")
    assert missing_conversation.value.param == "conversation"

    with pytest.raises(openai.BadRequestError) as missing_previous:
        await client.responses.create(model="m", input="x", previous_response_id="resp_nope")
    assert missing_previous.value.code == "previous_response_not_found"
    assert missing_previous.value.param == "previous_response_id"

    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(
            model="m", input="x", conversation=conversation.id, previous_response_id="resp_1"
        )
    assert sim.delete_conversation(conversation.id)  # expired upstream
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="m", input="x", conversation=conversation.id)
    assert [r.status for r in sim.requests] == [404, 400, 200, 400, 404]


async def test_missing_key_is_401(sim: OpenAISimulator, base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/responses", json={"model": "m", "input": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_stream_events_come_in_openai_order(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    stream = await client.responses.create(model="gpt-5-mini", input="one two three", stream=True)
    events = [event async for event in stream]

    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == "Echo: one two three"
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert final.response.output_text == "Echo: one two three"


async def test_stream_helper_rebuilds_the_final_response(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    sim.stream_delay = 0.01
    try:
        async with client.responses.stream(model="gpt-5-mini", input="stream me") as stream:
            snapshots = [e.snapshot async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    finally:
        sim.stream_delay = 0.0
    assert snapshots[-1] == "Echo: stream me"
    assert final.output_text == "Echo: stream me"
    assert (await client.responses.retrieve(final.id)).output_text == "Echo: stream me"


TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "order_status",
        "description": "Look up an order",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        "strict": False,
    }
]


def order_tool(turn: SimTurn) -> list[dict[str, Any]] | None:
    if any("order" in text for text in turn.user_texts):
        return [{"name": "order_status", "arguments": {"order": "A-17"}}]
    return None


async def test_function_call_round_trip(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    sim.tool_calls = order_tool
    conversation = await client.conversations.create()
    first = await client.responses.create(
        model="gpt-5-mini", input="where is my order?", tools=TOOLS, conversation=conversation.id
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "order_status"
    assert call.call_id.startswith("call_") and call.id is not None and call.id.startswith("fc_")
    assert call.arguments == '{"order": "A-17"}' and first.output_text == ""

    second = await client.responses.create(
        model="gpt-5-mini",
        tools=TOOLS,
        conversation=conversation.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}],
    )
    assert second.output_text == "Tool said: shipped"
    items = await client.conversations.items.list(conversation.id, order="asc")
    kinds = [item.type for item in items.data]
    assert kinds == ["message", "function_call", "function_call_output", "message"]

    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        await client.responses.create(
            model="m",
            previous_response_id=second.id,
            input=[{"type": "function_call_output", "call_id": "call_x", "output": "?"}],
        )


async def test_function_call_streams_its_arguments(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    sim.tool_calls = order_tool
    async with client.responses.stream(model="m", input="my order", tools=TOOLS) as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == '{"order": "A-17"}'


async def test_injected_500_is_retried_by_the_sdk(sim: OpenAISimulator, base_url: str) -> None:
    sim.inject(500, path="/v1/responses")
    async with make_client(base_url, max_retries=1) as client:
        response = await client.responses.create(model="m", input="again")
    assert response.output_text == "Echo: again"
    assert [r.status for r in sim.requests] == [500, 200]
    assert sim.requests[0].faulted and not sim.requests[1].faulted


async def test_injected_429_carries_retry_after(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    sim.inject(
        429, headers={"retry-after": "7"}, code="insufficient_quota", type="insufficient_quota"
    )
    with pytest.raises(openai.RateLimitError) as error:
        await client.responses.create(model="m", input="x")
    assert error.value.response.headers["retry-after"] == "7"
    assert error.value.code == "insufficient_quota"
    assert (await client.responses.create(model="m", input="x")).output_text == "Echo: x"


async def test_inject_timeout_makes_the_sdk_time_out(sim: OpenAISimulator, base_url: str) -> None:
    sim.inject_timeout(delay=2)
    async with make_client(base_url, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.responses.create(model="m", input="slow")
        response = await client.responses.create(model="m", input="fast")
    assert response.output_text == "Echo: fast"
    # The sim notices the client hung up and records it as nginx's 499.
    await sim.wait_until(lambda: [r for r in sim.requests if r.status == 499], 1, 1.0, "499s")
    assert [r.status for r in sim.requests] == [499, 200]


async def test_latency_and_upstream_down(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    sim.latency = 0.3
    started = time.monotonic()
    await client.responses.create(model="m", input="x")
    assert time.monotonic() - started >= 0.3
    sim.latency = 0.0

    sim.fail_always(503)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model="m", input="x")
    sim.clear_faults()
    await client.responses.create(model="m", input="x")
    assert [r.status for r in sim.requests] == [200, 503, 503, 503, 200]


async def test_wait_for_requests(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    await client.responses.create(model="m", input="x")
    found = await sim.wait_for_requests(1, path="/v1/responses", timeout=1)
    assert found[0].path == "/v1/responses"
    with pytest.raises(TimeoutError, match="expected 2 requests to /v1/responses"):
        await sim.wait_for_requests(2, path="/v1/responses", timeout=0.1)


async def test_context_window_and_output_limit(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    sim.context_window = 40
    first = await client.responses.create(model="m", input="a" * 80)
    with pytest.raises(openai.BadRequestError) as error:
        await client.responses.create(model="m", input="b" * 80, previous_response_id=first.id)
    assert error.value.code == "context_length_exceeded"
    trimmed = await client.responses.create(
        model="m", input="b" * 80, previous_response_id=first.id, truncation="auto"
    )
    assert trimmed.status == "completed"

    sim.context_window = None
    sim.reply = lambda turn: "word " * 200
    cut = await client.responses.create(model="m", input="long please", max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert len(cut.output_text) == 64


async def test_moderation_flags_only_the_marker(sim: OpenAISimulator, client: AsyncOpenAI) -> None:
    result = await client.moderations.create(input=["fine", "this is [flagged] text"])
    assert [r.flagged for r in result.results] == [False, True]
    assert result.results[1].categories.harassment
    assert not result.results[0].categories.violence


# --- images and audio -----------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


async def test_inline_images_are_recorded_and_bad_ones_refused(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    image: Any = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": url},
            ],
        }
    ]
    response = await client.responses.create(model="gpt-5-mini", input=image)
    assert response.output_text == "Echo: what is this?"
    assert sim.images == [{"type": "input_image", "image_url": url}]

    image[0]["content"][1]["image_url"] = "data:text/html;base64,PGh0bWw+"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="gpt-5-mini", input=image)
    assert refused.value.param == "input[0].content[1].image_url"


async def test_transcription_hears_what_the_test_registered_for_those_bytes(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    voice = b"OggS" + bytes(range(64))
    sim.transcripts.register(voice, "Where is my order?")

    heard = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("voice.ogg", voice, "audio/ogg")
    )
    other = await client.audio.transcriptions.create(
        model="whisper-1", file=("other.mp3", b"ID3" + b"\x01" * 10, "audio/mpeg")
    )

    assert heard.text == "Where is my order?"
    assert other.text.startswith("audio ") and other.text == sim.transcripts.text_for(
        b"ID3" + b"\x01" * 10
    )
    first = sim.transcribed[0]
    assert (first.filename, first.content_type, first.model, first.data) == (
        "voice.ogg",
        "audio/ogg",
        "gpt-4o-mini-transcribe",
        voice,
    )
    with pytest.raises(openai.BadRequestError):
        await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.amr", b"#!AMR\n", "audio/amr")
        )


async def test_deletions_are_recorded_and_a_fault_can_hit_deletes_only(
    sim: OpenAISimulator, client: AsyncOpenAI
) -> None:
    conversation = await client.conversations.create()
    response = await client.responses.create(model="m", input="x", conversation=conversation.id)
    sim.inject(500, method="DELETE", times=1)
    with pytest.raises(openai.InternalServerError):
        await client.conversations.delete(conversation.id)
    assert sim.has_conversation(conversation.id) and sim.deleted_conversations == []
    # The fault was for deletes only: other requests, and the next delete, go through.
    assert (await client.conversations.retrieve(conversation.id)).id == conversation.id
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted"
    await client.responses.delete(response.id)
    await sim.wait_for_deletions(conversations=1, responses=1)
    assert sim.deleted_conversations == [conversation.id]
    assert sim.deleted_responses == [response.id]
    # A second delete is a 404, and not counted as a deletion.
    with pytest.raises(openai.NotFoundError):
        await client.conversations.delete(conversation.id)
    assert sim.deleted_conversations == [conversation.id]
    sim.reset()
    assert sim.deleted_conversations == [] and sim.deleted_responses == []
