"""PARLEY_CONTEXT on a real store and the OpenAI simulator: what the upstream is sent each
turn, and how lost upstream state and an overflowing context are recovered."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from parley.agent.summary import SUMMARY_INSTRUCTIONS
from parley.config import Settings
from parley.runtime import Runtime, build_runtime, close
from parley.store.migrate import upgrade
from parley.store.models import Conversation, Message
from parley.store.queries.inbound import record_inbound
from parley.testing import OpenAISimulator
from tests.factories import inbound_text

PHONE = "34600000077"
_mids = itertools.count(1)

MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(settings: Settings) -> AsyncIterator[MakeRuntime]:
    """A runtime with some settings changed (e.g. `parley_context`)."""
    await upgrade(settings.database_url)
    runtimes: list[Runtime] = []

    async def make(**update: Any) -> Runtime:
        runtime = build_runtime(settings.model_copy(update=update))
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        await close(runtime)


async def say(runtime: Runtime, *texts: str) -> int:
    """The customer writes `texts`; one turn answers them. Returns the conversation id."""
    async with runtime.sessions() as session:
        (conversation_id,) = await record_inbound(
            session,
            messages=[inbound_text(f"wamid.ctx{next(_mids)}", t, phone=PHONE) for t in texts],
            correlation_id="c",
        )
        await session.commit()
    assert await runtime.processor.process(conversation_id) == 1
    return conversation_id


async def conversation_row(runtime: Runtime, conversation_id: int) -> Conversation:
    async with runtime.sessions() as session:
        row = await session.get(Conversation, conversation_id)
        assert row is not None
        return row


async def last_answer(runtime: Runtime, conversation_id: int) -> str | None:
    async with runtime.sessions() as session:
        return await session.scalar(
            select(Message.text)
            .where(Message.conversation_id == conversation_id, Message.sender == "agent")
            .order_by(Message.sequence_no.desc())
            .limit(1)
        )


def turns(sim: OpenAISimulator) -> list[dict[str, Any]]:
    """What the upstream received for the agent's turns (summaries left out)."""
    return [
        r.json for r in sim.response_requests if r.json.get("instructions") != SUMMARY_INSTRUCTIONS
    ]


def summaries(sim: OpenAISimulator) -> list[dict[str, Any]]:
    return [
        r.json for r in sim.response_requests if r.json.get("instructions") == SUMMARY_INSTRUCTIONS
    ]


def texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["role"], i["content"]) for i in items]


async def test_conversation_sends_only_new_input_on_one_remote_conversation(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(parley_context="conversation")
    conversation_id = await say(runtime, "one")
    await say(runtime, "two")
    await say(runtime, "three", "four")

    remote = (await conversation_row(runtime, conversation_id)).remote_conversation_id
    sent = turns(openai_sim)
    assert [s["conversation"] for s in sent] == [remote] * 3
    assert [texts(s["input"]) for s in sent] == [
        [("user", "one")],
        [("user", "two")],
        [("user", "three"), ("user", "four")],
    ]
    assert all("previous_response_id" not in s for s in sent)
    created = openai_sim.requests_to("/v1/conversations", method="POST")
    assert len(created) == 1 and "items" not in created[0].json
    # The upstream remembers: four customer messages and three answers.
    assert len(openai_sim.conversation_items(remote or "")) == 7


async def test_previous_response_chains_on_the_last_answer(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(parley_context="previous_response")
    conversation_id = await say(runtime, "one")
    first = (await conversation_row(runtime, conversation_id)).last_response_id
    await say(runtime, "two")
    second = (await conversation_row(runtime, conversation_id)).last_response_id

    sent = turns(openai_sim)
    assert "previous_response_id" not in sent[0]
    assert sent[1]["previous_response_id"] == first and first is not None
    assert second != first
    assert [texts(s["input"]) for s in sent] == [[("user", "one")], [("user", "two")]]
    assert all(s["store"] is True and "conversation" not in s for s in sent)
    assert openai_sim.requests_to("/v1/conversations") == []


async def test_local_sends_bounded_history_with_a_summary(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    budget = 120
    runtime = await make_runtime(parley_context="local", parley_context_tokens=budget)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    conversation_id = 0
    for word in words:
        conversation_id = await say(runtime, f"my favourite word today is {word}")

    sent = turns(openai_sim)
    assert len(sent) == len(words)
    for body in sent:
        assert body["store"] is False
        assert "conversation" not in body and "previous_response_id" not in body
        # Within the budget, new input included (ceil(chars / 4) + 4 per item).
        assert sum(4 + -(-len(i["content"]) // 4) for i in body["input"]) <= budget
    # The second turn carries the first exchange, oldest first, as user/assistant.
    assert texts(sent[1]["input"]) == [
        ("user", "my favourite word today is alpha"),
        ("assistant", "Echo: my favourite word today is alpha"),
        ("user", "my favourite word today is bravo"),
    ]
    # Over budget, older turns were summarised in a call of their own, not stored upstream…
    # (only when over budget: half the budget is kept free, so not on every turn)
    assert 0 < len(summaries(openai_sim)) <= len(words) // 2
    assert all(s["store"] is False for s in summaries(openai_sim))
    assert "alpha" in summaries(openai_sim)[0]["input"][0]["content"]
    # …and the summary leads the history as a developer message.
    last = sent[-1]["input"]
    assert last[0]["role"] == "developer" and "Summary" in last[0]["content"]
    assert texts(last[-1:]) == [("user", "my favourite word today is india")]
    summary = (await conversation_row(runtime, conversation_id)).summary or ""
    assert summary.startswith("[summary through #")
    assert await last_answer(runtime, conversation_id) == "Echo: my favourite word today is india"


async def test_local_summarises_and_retries_when_the_context_is_exceeded(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(parley_context="local")
    conversation_id = await say(runtime, "one")
    await say(runtime, "two")
    openai_sim.inject(400, path="/v1/responses", code="context_length_exceeded")
    await say(runtime, "three")

    sent = turns(openai_sim)
    assert len(summaries(openai_sim)) == 1
    retried = sent[-1]["input"]
    assert retried[0]["role"] == "developer"
    assert texts(retried[1:]) == [("user", "three")]
    assert await last_answer(runtime, conversation_id) == "Echo: three"


async def test_a_lost_remote_conversation_is_replaced_seeded_from_history(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(parley_context="conversation")
    conversation_id = await say(runtime, "one")
    await say(runtime, "two")
    old = (await conversation_row(runtime, conversation_id)).remote_conversation_id or ""
    assert openai_sim.delete_conversation(old)

    await say(runtime, "three")

    new = (await conversation_row(runtime, conversation_id)).remote_conversation_id
    assert new and new != old
    created = openai_sim.requests_to("/v1/conversations", method="POST")
    assert len(created) == 2
    assert texts(created[1].json["items"]) == [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "two"),
        ("assistant", "Echo: two"),
    ]
    sent = turns(openai_sim)
    assert [s["conversation"] for s in sent[-2:]] == [old, new]
    assert texts(sent[-1]["input"]) == [("user", "three")]
    assert await last_answer(runtime, conversation_id) == "Echo: three"


async def test_a_lost_previous_response_starts_a_chain_from_history(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(parley_context="previous_response")
    conversation_id = await say(runtime, "one")
    async with runtime.sessions() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(last_response_id="resp_gone")
        )
        await session.commit()

    await say(runtime, "two")

    sent = turns(openai_sim)
    assert sent[-2]["previous_response_id"] == "resp_gone"
    assert "previous_response_id" not in sent[-1]
    assert texts(sent[-1]["input"]) == [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "two"),
    ]
    row = await conversation_row(runtime, conversation_id)
    assert row.last_response_id not in (None, "resp_gone")
    assert await last_answer(runtime, conversation_id) == "Echo: two"

    # The new chain is used from then on, even after the upstream forgets everything else.
    openai_sim.reset_state()
    await say(runtime, "three")
    assert await last_answer(runtime, conversation_id) == "Echo: three"
    assert "previous_response_id" not in turns(openai_sim)[-1]


@pytest.mark.parametrize("context", ["conversation", "previous_response"])
async def test_context_length_exceeded_is_retried_with_truncation(
    make_runtime: MakeRuntime,
    openai_sim: OpenAISimulator,
    monkeypatch: pytest.MonkeyPatch,
    context: str,
) -> None:
    runtime = await make_runtime(
        parley_context=context, parley_instructions="Be brief.", parley_builtin_tools=""
    )
    monkeypatch.setattr(openai_sim, "context_window", 40)
    conversation_id = 0
    for text in ["message number one", "message number two", "message number three"]:
        conversation_id = await say(runtime, text)

    sent = turns(openai_sim)
    assert all("truncation" not in s for s in sent[:2])
    assert "truncation" not in sent[2] and sent[3]["truncation"] == "auto"
    assert len(sent) == 4
    assert await last_answer(runtime, conversation_id) == "Echo: message number three"
