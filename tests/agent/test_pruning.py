"""Pruning (PARLEY_CONTEXT_MAX_INPUT_TOKENS) on a real store and the OpenAI simulator: past the
threshold, `conversation` and `previous_response` start a fresh upstream context seeded with a
summary and the recent turns, so a long chat's turns stay bounded in input tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from parley.agent.summary import SUMMARY_INSTRUCTIONS
from parley.config import Settings
from parley.runtime import Runtime, build_runtime, close
from parley.store.migrate import upgrade
from parley.store.models import Message, UpstreamDeletion
from parley.testing import OpenAISimulator, SimTurn, echo_reply
from parley.testing.faults import ApiError
from tests.agent.test_context_strategies import (
    MakeRuntime,
    conversation_row,
    last_answer,
    say,
    summaries,
    texts,
    turns,
)

LIMIT = 300
"""A small threshold, so a 30-turn chat crosses it several times."""
TURNS = 30
STRATEGIES = ["conversation", "previous_response"]


@pytest.fixture
async def make_runtime(settings: Settings) -> AsyncIterator[MakeRuntime]:
    """A runtime with a short prompt and no tools (a turn's input is then mostly the chat),
    whose customer may write a long chat within a minute."""
    await upgrade(settings.database_url)
    runtimes: list[Runtime] = []

    async def make(**update: Any) -> Runtime:
        base = {
            "parley_instructions": "Be brief.",
            "parley_builtin_tools": "",
            "parley_customer_messages_per_minute": 1000,
        }
        runtime = build_runtime(settings.model_copy(update={**base, **update}))
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        await close(runtime)


def note(number: int) -> str:
    return f"note {number:02d}: my order {1000 + number} is still not here, please check"


async def recorded_input_tokens(runtime: Runtime, conversation_id: int) -> list[int]:
    """Parley's record of each answer's input tokens (the upstream's usage), oldest first."""
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(Message.input_tokens)
            .where(
                Message.conversation_id == conversation_id,
                Message.sender == "agent",
                Message.input_tokens.is_not(None),
            )
            .order_by(Message.sequence_no)
        )
        return [int(tokens) for tokens in rows if tokens is not None]


async def chat(runtime: Runtime, count: int, start: int = 1) -> int:
    conversation_id = 0
    for number in range(start, start + count):
        conversation_id = await say(runtime, note(number))
    return conversation_id


def fresh_starts(sim: OpenAISimulator, context: str) -> list[list[dict[str, Any]]]:
    """What each fresh upstream context after the first started with: a new conversation's
    items, or a chain's first input."""
    if context == "conversation":
        created = sim.requests_to("/v1/conversations", method="POST")
        return [r.json.get("items", []) for r in created[1:]]
    return [s["input"] for s in turns(sim)[1:] if "previous_response_id" not in s]


@pytest.mark.parametrize("context", STRATEGIES)
async def test_a_long_chat_grows_without_pruning(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator, context: str
) -> None:
    runtime = await make_runtime(parley_context=context, parley_context_max_input_tokens=0)
    conversation_id = await chat(runtime, TURNS)

    tokens = await recorded_input_tokens(runtime, conversation_id)
    assert len(tokens) == TURNS
    # Every turn pays for the whole chat: the last one several times the threshold.
    assert tokens == sorted(tokens) and tokens[-1] > 3 * LIMIT
    assert await upstream_input_tokens(runtime, conversation_id, openai_sim) == tokens
    row = await conversation_row(runtime, conversation_id)
    assert row.last_input_tokens == tokens[-1]
    assert fresh_starts(openai_sim, context) == []
    assert summaries(openai_sim) == []


@pytest.mark.parametrize("context", STRATEGIES)
async def test_a_long_chat_is_pruned_to_bounded_input(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator, context: str
) -> None:
    runtime = await make_runtime(parley_context=context, parley_context_max_input_tokens=LIMIT)
    conversation_id = await chat(runtime, TURNS)

    tokens = await recorded_input_tokens(runtime, conversation_id)
    assert len(tokens) == TURNS
    # A turn may cross the threshold by one exchange; the next starts afresh.
    assert max(tokens) <= LIMIT + 60
    assert await upstream_input_tokens(runtime, conversation_id, openai_sim) == tokens
    sent = turns(openai_sim)
    assert await last_answer(runtime, conversation_id) == f"Echo: {note(TURNS)}"

    starts = fresh_starts(openai_sim, context)
    assert len(starts) >= 3
    # Summaries were asked for in calls of their own, never stored upstream.
    assert summaries(openai_sim) and all(s["store"] is False for s in summaries(openai_sim))
    # The first fresh context: the summary of the older turns first (the earliest note in
    # it), then the turns before the pruning one, verbatim.
    first = starts[0]
    assert first[0]["role"] == "developer" and "Summary" in first[0]["content"]
    assert "note 01" in first[0]["content"]
    pruned_at = _pruning_turn(sent, context)
    recent = texts(first[1:])
    if context == "previous_response":
        assert recent[-1] == ("user", note(pruned_at))  # the chain's first input ends so
        recent = recent[:-1]
    # …the newest messages before the pruning turn, in order, with nothing in between.
    transcript = [
        message
        for number in range(1, pruned_at)
        for message in [("user", note(number)), ("assistant", f"Echo: {note(number)}")]
    ]
    assert len(recent) >= 2 and recent == transcript[-len(recent) :]
    await _assert_row_links_the_current_context(runtime, conversation_id, openai_sim, context)
    if context == "conversation":
        # Each replaced upstream conversation is queued for deletion (or already deleted).
        current = (await conversation_row(runtime, conversation_id)).remote_conversation_id
        replaced = {turn["conversation"] for turn in sent} - {current}
        async with runtime.sessions() as session:
            queued = set(
                await session.scalars(
                    select(UpstreamDeletion.object_id).where(UpstreamDeletion.reason == "pruned")
                )
            )
        assert len(replaced) >= 3
        assert replaced <= queued | set(openai_sim.deleted_conversations)


@pytest.mark.parametrize("context", STRATEGIES)
async def test_a_failed_summary_still_answers_and_starts_fresh(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator, context: str
) -> None:
    runtime = await make_runtime(parley_context=context, parley_context_max_input_tokens=LIMIT)
    conversation_id = await _chat_until_due(runtime)
    number = _next_note(await recorded_input_tokens(runtime, conversation_id))
    # The pruning turn's first upstream call is the summary: it fails, and is not retried.
    openai_sim.inject(400, path="/v1/responses", code="invalid_request_error")

    await say(runtime, note(number))

    assert await last_answer(runtime, conversation_id) == f"Echo: {note(number)}"
    failed = summaries(openai_sim)
    assert len(failed) == 1
    (start,) = fresh_starts(openai_sim, context)
    # No summary: the recent turns only, the last exchange before this turn verbatim.
    assert all(item["role"] != "developer" for item in start)
    recent = texts(start) if context == "conversation" else texts(start)[:-1]
    assert recent[-2:] == [
        ("user", note(number - 1)),
        ("assistant", f"Echo: {note(number - 1)}"),
    ]
    tokens = await recorded_input_tokens(runtime, conversation_id)
    assert tokens[-1] < LIMIT
    await _assert_row_links_the_current_context(runtime, conversation_id, openai_sim, context)


async def test_a_turn_that_fails_after_pruning_keeps_the_new_remote_conversation(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(
        parley_context="conversation", parley_context_max_input_tokens=LIMIT
    )
    conversation_id = await _chat_until_due(runtime)
    old = (await conversation_row(runtime, conversation_id)).remote_conversation_id
    failures = []

    def fail_the_answer_once(turn: SimTurn) -> str:
        if turn.instructions != SUMMARY_INSTRUCTIONS and not failures:
            failures.append(turn.conversation_id)
            raise ApiError(400, "Invalid request.", code="invalid_request_error")
        return echo_reply(turn)

    openai_sim.reply = fail_the_answer_once
    number = _next_note(await recorded_input_tokens(runtime, conversation_id))
    await say(runtime, note(number))

    # The customer got the fallback, but the new upstream conversation is linked…
    row = await conversation_row(runtime, conversation_id)
    assert failures and failures[0] == row.remote_conversation_id != old
    assert row.last_input_tokens is None
    # …and the redo (an operator's retry, or the next message) continues on it, pruning
    # nothing again.
    await say(runtime, note(number + 1))
    assert await last_answer(runtime, conversation_id) == f"Echo: {note(number + 1)}"
    assert len(openai_sim.requests_to("/v1/conversations", method="POST")) == 2
    assert turns(openai_sim)[-1]["conversation"] == row.remote_conversation_id


async def upstream_input_tokens(
    runtime: Runtime, conversation_id: int, sim: OpenAISimulator
) -> list[int]:
    """The simulator's own usage of each answer Parley stored, oldest first."""
    async with runtime.sessions() as session:
        ids = await session.scalars(
            select(Message.response_id)
            .where(Message.conversation_id == conversation_id, Message.sender == "agent")
            .order_by(Message.sequence_no)
        )
        stored = [sim.stored_response(response_id or "") for response_id in ids]
    return [int(body["usage"]["input_tokens"]) for body in stored if body is not None]


def _pruning_turn(sent: list[dict[str, Any]], context: str) -> int:
    """The number of the first turn that ran on a fresh upstream context (1 = the first)."""
    for index, body in enumerate(sent[1:], start=2):
        if context == "conversation" and body["conversation"] != sent[0]["conversation"]:
            return index
        if context == "previous_response" and "previous_response_id" not in body:
            return index
    raise AssertionError("no turn was pruned")


def _next_note(tokens: list[int]) -> int:
    return len(tokens) + 1


async def _chat_until_due(runtime: Runtime) -> int:
    """Chat until the last turn's input passed the threshold: the next turn prunes."""
    number, conversation_id = 1, 0
    while True:
        conversation_id = await say(runtime, note(number))
        row = await conversation_row(runtime, conversation_id)
        if (row.last_input_tokens or 0) > LIMIT:
            return conversation_id
        number += 1
        assert number < TURNS, "the threshold was never passed"


async def _assert_row_links_the_current_context(
    runtime: Runtime, conversation_id: int, sim: OpenAISimulator, context: str
) -> None:
    """The conversation row names the upstream state the last turn ran on."""
    row = await conversation_row(runtime, conversation_id)
    last = turns(sim)[-1]
    if context == "conversation":
        assert last["conversation"] == row.remote_conversation_id
        created = sim.requests_to("/v1/conversations", method="POST")
        assert len(created) >= 2 and row.remote_conversation_id is not None
    else:
        stored = sim.stored_response(row.last_response_id or "")
        assert stored is not None
        assert stored["output"][0]["content"][0]["text"] == await last_answer(
            runtime, conversation_id
        )


async def test_a_tool_loop_records_its_last_calls_input_not_the_sum(
    make_runtime: MakeRuntime, openai_sim: OpenAISimulator
) -> None:
    runtime = await make_runtime(
        parley_context="previous_response", parley_builtin_tools="current_time"
    )
    openai_sim.tool_calls = lambda turn: [{"name": "current_time", "arguments": {}}]
    conversation_id = await say(runtime, "what time is it?")

    _, follow_up = [r.json for r in openai_sim.requests_to("/v1/responses")]
    assert follow_up["input"][0]["type"] == "function_call_output"
    row = await conversation_row(runtime, conversation_id)
    calls = [follow_up["previous_response_id"], row.last_response_id or ""]
    usage = [(openai_sim.stored_response(c) or {})["usage"]["input_tokens"] for c in calls]
    # The answer's usage sums both calls (what was paid); the context is the last call's.
    assert await recorded_input_tokens(runtime, conversation_id) == [sum(usage)]
    assert row.last_input_tokens == usage[-1] < sum(usage)
