"""Parley's own Responses API through the official `openai` SDK, with strict response
validation: every answer must parse as the SDK's types, and every behaviour is checked at the
upstream simulator and in the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from parley.app import create_app
from parley.config import Settings
from parley.store.queries.users import create_user
from parley.testing import OpenAISimulator, ServerThread, SimTurn
from parley.testing.openai_items import message_texts
from tests.conftest import ADMIN_TOKEN, BACKENDS, MakeParley, Parley, Store, connections_refused

OPEN = ("queued", "in_progress")


async def new_token(store: Store, name: str) -> str:
    async with AsyncSession(store.engine) as session:
        _, issued = await create_user(session, name=name)
        await session.commit()
    return issued.value


def sdk(parley: Parley, token: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{parley.server.url}/v1",
        api_key=token,
        max_retries=0,
        timeout=20,
        _strict_response_validation=True,
    )


@pytest.fixture
async def token(parley: Parley, store: Store) -> str:
    return await new_token(store, "alice")


@pytest.fixture
async def client(parley: Parley, token: str) -> AsyncIterator[AsyncOpenAI]:
    client = sdk(parley, token)
    yield client
    await client.close()


async def finished(client: AsyncOpenAI, response_id: str, timeout: float = 15) -> Response:
    """GET until the response leaves queued/in_progress, as a polling client does."""

    async def poll() -> Response:
        # Polling is the API's own way to learn a background result; there is no event.
        while (found := await client.responses.retrieve(response_id)).status in OPEN:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return found

    return await asyncio.wait_for(poll(), timeout)


def upstream_bodies(sim: OpenAISimulator) -> list[dict[str, Any]]:
    return [r.json for r in sim.response_requests]


def user_texts(body: dict[str, Any]) -> list[str]:
    items = body["input"]
    if isinstance(items, str):
        return [items]
    texts = []
    for item in items:
        if item.get("role") != "user":
            continue
        content = item["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [p["text"] for p in content if p.get("type") == "input_text"]
    return texts


# --- create, retrieve, delete, input items ---------------------------------------------------


async def test_string_input_is_answered_and_stored(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    response = await client.responses.create(model="default", input="Where is my order?")

    assert response.status == "completed"
    assert response.output_text == "Echo: Where is my order?"
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    (body,) = upstream_bodies(openai_sim)
    assert user_texts(body) == ["Where is my order?"]
    rows = await parley.rows(
        "SELECT direction, sender, text, status FROM messages ORDER BY sequence_no"
    )
    assert rows == [
        ("in", "customer", "Where is my order?", "answered"),
        ("out", "agent", "Echo: Where is my order?", "sent"),
    ]
    fetched = await client.responses.retrieve(response.id)
    assert fetched.id == response.id
    assert fetched.output_text == response.output_text
    assert fetched.usage == response.usage


async def test_list_input_sends_every_message_and_image(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    response = await client.responses.create(
        model="default",
        input=[
            {"role": "user", "content": "First, a question."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "low",
                    },
                ],
            },
        ],
        instructions="Answer in French.",
    )

    assert response.output_text == "Echo: What is in this picture?"
    assert response.instructions == "Answer in French."
    (body,) = upstream_bodies(openai_sim)
    assert user_texts(body) == ["First, a question.", "What is in this picture?"]
    images = [
        part
        for item in body["input"]
        if isinstance(item.get("content"), list)
        for part in item["content"]
        if part["type"] == "input_image"
    ]
    assert images == [
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}
    ]
    # The caller's instructions come after the agent's own, never instead of them.
    assert body["instructions"].endswith("\n\nAnswer in French.")
    assert "customer-service assistant" in body["instructions"]


async def test_retrieve_delete_and_input_items(client: AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="default",
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        metadata={"ticket": "T-7"},
    )
    assert response.metadata == {"ticket": "T-7"}

    items = await client.responses.input_items.list(response.id, order="asc")
    texts = [part.text for item in items.data for part in item.content]  # type: ignore[union-attr]
    assert texts == ["one", "two"]
    newest = await client.responses.input_items.list(response.id, limit=1)
    assert [part.text for part in newest.data[0].content] == ["two"]  # type: ignore[union-attr]
    assert newest.has_more is True

    assert (await client.responses.retrieve(response.id)).metadata == {"ticket": "T-7"}
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)


async def test_model_names_an_agent_profile_and_its_prompt(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    prompt = {
        "name": "sales",
        "instructions": "You sell bikes to {{customer_name}} over {{channel}}.",
        "model": "gpt-5-nano",
        "settings": {"temperature": 0.3},
    }
    assert (await parley.client.post("/admin/prompts", json=prompt, headers=admin)).is_success
    bound = await parley.client.put(
        "/admin/profiles/sales", json={"prompt": "sales"}, headers=admin
    )
    assert bound.is_success, bound.text

    answer = await client.responses.create(model="sales", input="A red one?")

    assert answer.model == "sales"
    (body,) = upstream_bodies(openai_sim)
    assert body["model"] == "gpt-5-nano"
    assert body["temperature"] == 0.3
    assert body["instructions"] == "You sell bikes to alice over api."
    rows = await parley.rows(
        "SELECT p.name, v.version FROM messages m JOIN prompt_versions v "
        "ON v.id = m.prompt_version_id JOIN prompts p ON p.id = v.prompt_id "
        "WHERE m.sender = 'agent'"
    )
    assert rows == [("sales", 1)]
    # The default profile keeps the built-in prompt.
    await client.responses.create(model="default", input="hi")
    assert upstream_bodies(openai_sim)[-1]["model"] == "gpt-5-mini"
    # Each response's thread is its own conversation, under its profile; the bound one
    # records the prompt version it follows.
    threads = await parley.rows(
        "SELECT c.profile, c.channel, c.prompt_version_id IS NOT NULL, count(m.id) "
        "FROM responses r JOIN conversations c ON c.id = r.conversation_id "
        "JOIN messages m ON m.conversation_id = c.id "
        "GROUP BY r.id, r.created_at, c.profile, c.channel, c.prompt_version_id "
        "ORDER BY r.created_at"
    )
    assert threads == [("sales", "api", True, 2), ("default", "api", False, 2)]


async def test_unknown_model_is_a_bad_request(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="gpt-unknown", input="hi")
    assert caught.value.param == "model"


# --- threads and memory ----------------------------------------------------------------------


def remembering(turn: SimTurn) -> str:
    said = message_texts(turn.history, "user") + turn.user_texts
    return "You said: " + " | ".join(said)


@pytest.mark.parametrize("context", ["previous_response", "local"])
async def test_three_turn_chain_remembers(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator, context: str
) -> None:
    openai_sim.reply = remembering
    parley = make_parley(parley_context=context)
    client = sdk(parley, await new_token(store, "bob"))

    first = await client.responses.create(model="default", input="My name is Ana.")
    second = await client.responses.create(
        model="default", input="I live in Porto.", previous_response_id=first.id
    )
    third = await client.responses.create(
        model="default", input="What do you know?", previous_response_id=second.id
    )

    assert third.output_text == "You said: My name is Ana. | I live in Porto. | What do you know?"
    assert third.previous_response_id == second.id
    bodies = upstream_bodies(openai_sim)
    if context == "local":  # Parley sent the history itself, nothing kept upstream
        assert all(body["store"] is False for body in bodies)
    else:  # each turn chained on the upstream answer to the previous one
        ((upstream_second,),) = await store.rows(
            "SELECT upstream_response_id FROM responses WHERE id = ?", second.id
        )
        assert bodies[2]["previous_response_id"] == upstream_second
        assert user_texts(bodies[2]) == ["What do you know?"]
    conversations = await store.rows("SELECT count(*) FROM conversations WHERE channel = 'api'")
    assert conversations == [(1,)]
    await client.close()


async def test_another_users_response_is_not_found(
    client: AsyncOpenAI, parley: Parley, store: Store
) -> None:
    mine = await client.responses.create(model="default", input="private")
    other = sdk(parley, await new_token(store, "mallory"))

    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await other.responses.create(model="default", input="hi", previous_response_id=mine.id)
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        await other.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(mine.id)
    assert (await client.responses.retrieve(mine.id)).output_text == "Echo: private"
    await other.close()


async def test_missing_previous_response_is_not_found(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(
            model="default", input="hi", previous_response_id="resp_doesnotexist"
        )


# --- caller tools, x_context ----------------------------------------------------------------


async def test_caller_function_tool_round_trip(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    def weather_call(turn: SimTurn) -> list[dict[str, Any]] | None:
        names = [t.get("name") for t in turn.body.get("tools", [])]
        if "get_weather" in names:
            return [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]
        return None

    openai_sim.tool_calls = weather_call
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    first = await client.responses.create(
        model="default",
        input="Weather in Lisbon?",
        tools=[tool],  # type: ignore[list-item]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Lisbon"}

    second = await client.responses.create(
        model="default",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21°C, sunny"}],
        tools=[tool],  # type: ignore[list-item]
    )
    assert second.output_text == "Tool said: 21°C, sunny"
    last = upstream_bodies(openai_sim)[-1]
    assert last["input"] == [
        {"type": "function_call_output", "call_id": call.call_id, "output": "21°C, sunny"}
    ]
    stored = await parley.rows(
        "SELECT sender, kind FROM messages WHERE sender = 'tool' ORDER BY sequence_no"
    )
    assert stored == [("tool", "tool_call"), ("tool", "function_call_output")]


async def test_x_context_reaches_the_upstream_and_the_store(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    x_context = {"order": {"id": 42, "status": "shipped"}, "page": "checkout"}
    await client.responses.create(
        model="default", input="Where is it?", extra_body={"x_context": x_context}
    )

    (body,) = upstream_bodies(openai_sim)
    (message,) = [i for i in body["input"] if i.get("role") == "user"]
    assert [p["text"] for p in message["content"]] == [
        "[Context: order — id: 42, status: shipped]\n[Context: page — checkout]",
        "Where is it?",
    ]
    (meta,) = await parley.rows(
        "SELECT meta FROM messages WHERE direction = 'in' AND sender = 'customer'"
    )
    stored = meta[0] if isinstance(meta[0], dict) else json.loads(meta[0])
    assert stored["x_context"] == x_context


async def test_x_context_over_10_kb_is_refused(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="default", input="hi", extra_body={"x_context": {"blob": "x" * 11_000}}
        )
    assert caught.value.param == "x_context"


# --- streaming --------------------------------------------------------------------------------


async def test_stream_events_in_openai_order(client: AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="default", input="tell me three words", stream=True
    )
    events = [event async for event in stream]

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # streamed from the upstream as it came, not in one piece
    assert "".join(deltas) == "Echo: tell me three words"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "Echo: tell me three words"
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_stream_helper_rebuilds_the_final_response(client: AsyncOpenAI) -> None:
    async with client.responses.stream(model="default", input="hello there") as stream:
        texts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(texts) == "Echo: hello there"
    assert final.output_text == "Echo: hello there"
    assert final.status == "completed"
    assert (await client.responses.retrieve(final.id)).output_text == "Echo: hello there"


async def test_disconnect_mid_stream_still_completes(
    parley: Parley, token: str, client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    openai_sim.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(40))
    response_id = None
    async with (
        httpx.AsyncClient(base_url=parley.server.url, timeout=10) as http,
        http.stream(
            "POST",
            "/v1/responses",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "default", "input": words, "stream": True},
        ) as answer,
    ):
        assert answer.headers["content-type"].startswith("text/event-stream")
        async for line in answer.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["type"] == "response.created":
                    response_id = event["response"]["id"]
                if event["type"] == "response.output_text.delta":
                    break  # the client goes away mid-answer
    assert response_id is not None

    found = await finished(client, response_id)
    assert found.status == "completed"
    assert found.output_text == f"Echo: {words}"


# --- errors -----------------------------------------------------------------------------------


async def test_malformed_json_is_an_openai_400(parley: Parley, token: str) -> None:
    answer = await parley.client.post(
        "/v1/responses",
        content=b'{"model": "default", "input": ',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


async def test_bad_fields_are_400_naming_the_parameter(parley: Parley, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    cases = [
        ({"input": "hi"}, "model"),
        ({"model": "default"}, "input"),
        ({"model": "default", "input": "hi", "temperature": 7}, "temperature"),
        ({"model": "default", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "default", "input": "hi", "bogus": 1}, "bogus"),
        ({"model": "default", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        # A list for a role was a 500 (it was looked up in a set of roles).
        ({"model": "default", "input": [{"role": ["user"], "content": "x"}]}, "input[0].role"),
        (
            {
                "model": "default",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": 5, "file_id": "file_1"},
                        ],
                    }
                ],
            },
            "input[0].content[1].image_url",
        ),
        (
            {
                "model": "default",
                "input": "hi",
                "tools": [{"type": "function", "name": "f", "strict": "false"}],
            },
            "tools[0].strict",
        ),
    ]
    for body, param in cases:
        answer = await parley.client.post("/v1/responses", json=body, headers=headers)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert f"'{param}'" in error["message"]


async def test_bad_token_is_an_authentication_error(parley: Parley) -> None:
    client = sdk(parley, "pk-not-a-real-token")
    with pytest.raises(openai.AuthenticationError):
        await client.responses.create(model="default", input="hi")
    await client.close()
    answer = await parley.client.get("/v1/responses/resp_x")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"


async def test_upstream_failure_ends_as_a_failed_response(
    client: AsyncOpenAI, openai_sim: OpenAISimulator, parley: Parley
) -> None:
    openai_sim.fail_always(500)
    response = await client.responses.create(model="default", input="hello?")

    assert response.status == "failed"
    assert response.error is not None
    assert "500" not in response.error.message  # the upstream's words stay in the store
    rows = await parley.rows("SELECT status, error FROM messages WHERE direction = 'in'")
    assert rows[0][0] == "failed" and "500" in rows[0][1]


# --- idempotency, background, blocking timeout --------------------------------------------------


async def test_idempotency_key_returns_the_first_result(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    key = {"Idempotency-Key": "order-42-question"}
    first = await client.responses.create(model="default", input="once", extra_headers=key)
    again = await client.responses.create(model="default", input="once", extra_headers=key)

    assert again.id == first.id
    assert again.output_text == first.output_text
    assert len(openai_sim.response_requests) == 1
    with pytest.raises(openai.ConflictError):
        await client.responses.create(model="default", input="different", extra_headers=key)


async def test_background_returns_at_once_and_can_be_cancelled(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    openai_sim.latency = 2.0
    started = await client.responses.create(model="default", input="slow one", background=True)
    assert started.status in ("queued", "in_progress")
    assert started.background is True

    cancelled = await client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(started.id)).status == "cancelled"


async def test_background_completes_for_a_later_get(client: AsyncOpenAI) -> None:
    started = await client.responses.create(model="default", input="later", background=True)

    found = await finished(client, started.id)
    assert found.status == "completed"
    assert found.output_text == "Echo: later"


async def test_synchronous_response_cannot_be_cancelled(client: AsyncOpenAI) -> None:
    response = await client.responses.create(model="default", input="quick")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(response.id)


async def test_blocking_call_answers_in_progress_past_the_wait(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    openai_sim.latency = 1.5
    parley = make_parley(parley_responses_wait=0.2)
    client = sdk(parley, await new_token(store, "carol"))

    response = await client.responses.create(model="default", input="take your time")
    assert response.status == "in_progress"

    assert (await finished(client, response.id)).output_text == "Echo: take your time"
    await client.close()


async def test_usage_is_summed_per_user(client: AsyncOpenAI, parley: Parley) -> None:
    first = await client.responses.create(model="default", input="a")
    second = await client.responses.create(model="default", input="b")
    assert first.usage and second.usage
    rows = await parley.rows(
        "SELECT u.name, d.requests, d.input_tokens, d.output_tokens FROM usage_user_daily d "
        "JOIN users u ON u.id = d.user_id"
    )
    assert rows == [
        (
            "alice",
            2,
            first.usage.input_tokens + second.usage.input_tokens,
            first.usage.output_tokens + second.usage.output_tokens,
        )
    ]


async def test_stream_carries_function_call_events(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    openai_sim.tool_calls = lambda turn: [{"name": "lookup", "arguments": {"sku": "A-1"}}]
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    async with client.responses.stream(
        model="default",
        input="find A-1",
        tools=[tool],  # type: ignore[list-item]
    ) as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()

    assert types[-5:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == "lookup"
    assert json.loads(call.arguments) == {"sku": "A-1"}


async def test_long_silence_gets_keep_alive_comments(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    openai_sim.latency = 0.5
    parley = make_parley(parley_stream_keepalive=0.1)
    token = await new_token(store, "dave")
    async with parley.client.stream(
        "POST",
        "/v1/responses",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "default", "input": "slow", "stream": True},
    ) as answer:
        lines = [line async for line in answer.aiter_lines() if line]
    first_delta = next(i for i, line in enumerate(lines) if "output_text.delta" in line)
    assert ": keep-alive" in lines[:first_delta]
    assert lines[-1].startswith("data:") and '"response.completed"' in lines[-1]


async def test_safety_applies_to_api_callers(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    parley = make_parley(parley_moderation=True, parley_moderation_reply="Not here, sorry.")
    client = sdk(parley, await new_token(store, "erin"))

    paid = await client.responses.create(model="default", input="My card is 4111 1111 1111 1111")
    refused = await client.responses.create(model="default", input="[flagged] something bad")

    (body,) = upstream_bodies(openai_sim)  # the flagged text never reached the model
    checked = [r.json for r in openai_sim.requests_to("/v1/moderations")]
    assert len(checked) == 2
    for sent in (body, *checked):
        assert "4111 1111 1111 1111" not in json.dumps(sent)
    assert paid.status == "completed"
    assert refused.status == "completed"
    assert refused.output_text == "Not here, sorry."
    rows = await store.rows("SELECT text, status FROM messages WHERE direction = 'in' ORDER BY id")
    assert rows == [
        ("My card is 4111 1111 1111 1111", "answered"),  # the stored original is whole
        ("[flagged] something bad", "refused"),
    ]
    await client.close()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"], indirect=True)
async def test_store_unavailable_is_an_openai_503(settings: Settings, database_url: str) -> None:
    # An API process whose database went away after it started: every /v1 call is a clean 503.
    server = ServerThread(create_app(settings, "api"), lifespan="on").start()
    try:
        async with (
            connections_refused(database_url),
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        ):
            answer = await http.post(
                "/v1/responses",
                json={"model": "default", "input": "hi"},
                headers={"Authorization": "Bearer pk-anything"},
            )
    finally:
        server.stop()
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] == "server_error"
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("context", ["previous_response", "local"])
async def test_own_tool_called_beside_the_callers_is_answered_with_it(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator, context: str
) -> None:
    # One model step calls Parley's current_time and the caller's get_weather together: the
    # upstream needs both outputs in the continuation, so Parley holds its own until then.
    def both(turn: SimTurn) -> list[dict[str, Any]]:
        return [
            {"name": "current_time", "arguments": {}},
            {"name": "get_weather", "arguments": {"city": "Faro"}},
        ]

    openai_sim.tool_calls = both
    parley = make_parley(parley_context=context)
    client = sdk(parley, await new_token(store, "frank"))
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}

    first = await client.responses.create(
        model="default",
        input="Time and weather?",
        tools=[tool],  # type: ignore[list-item]
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"  # Parley's own call is not the caller's business
    second = await client.responses.create(
        model="default",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18°C"}],
        tools=[tool],  # type: ignore[list-item]
    )

    assert second.status == "completed"
    assert second.output_text == "Tool said: 18°C"
    sent = upstream_bodies(openai_sim)[-1]["input"]
    outputs = [item for item in sent if item.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs][-1] == call.call_id
    assert len(outputs) == 2  # the held current_time output went up with the caller's
    await client.close()


async def test_retried_streamed_post_replays_the_first_answer(
    client: AsyncOpenAI, openai_sim: OpenAISimulator
) -> None:
    key = {"Idempotency-Key": "stream-once"}
    async with client.responses.stream(
        model="default", input="stream me", extra_headers=key
    ) as stream:
        first = await stream.get_final_response()
    async with client.responses.stream(
        model="default", input="stream me", extra_headers=key
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        again = await stream.get_final_response()

    assert again.id == first.id
    assert "".join(deltas) == again.output_text == "Echo: stream me"
    assert len(openai_sim.response_requests) == 1
