"""Retention (PARLEY_RETENTION_DAYS): conversations idle past the limit go in batches, here and
upstream (seen at the OpenAI simulator); a failed upstream delete is retried until it goes;
running twice, or two sweeps and two drainers at once, deletes everything exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from openai import AsyncOpenAI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.agent.llm import LLM
from parley.config import Settings
from parley.runtime import build_llm
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.models import Contact, Conversation, Message, Outbox, ResponseRecord, utcnow
from parley.store.queries.inbound import get_account
from parley.store.queries.responses import api_parties, new_thread
from parley.store.queries.upstream_deletions import (
    CONVERSATION,
    UpstreamObject,
    pending_deletions,
    queue_deletions,
)
from parley.store.queries.usage import UsageAdd, add_usage
from parley.store.queries.users import create_user
from parley.testing import OpenAISimulator
from parley.worker.retention import Retention
from parley.worker.upstream_deleter import UpstreamDeleter
from tests.conftest import Store

DAYS = 30
PHONE_NUMBER_ID = "109000000000001"


@dataclass(frozen=True)
class Seeded:
    conversation_id: int
    contact_id: int
    remote_id: str
    response_id: str


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def llm(settings: Settings) -> AsyncIterator[LLM]:
    llm = build_llm(settings)
    yield llm
    await llm.close()


@pytest.fixture
async def upstream(settings: Settings) -> AsyncIterator[AsyncOpenAI]:
    """A client of the simulator, to make the upstream objects a turn would have made."""
    client = AsyncOpenAI(api_key="sk-test", base_url=settings.openai_base_url, max_retries=0)
    yield client
    await client.close()


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    phone: str,
    *,
    idle_days: float,
) -> Seeded:
    """A customer's conversation as turns leave it: an upstream conversation with a stored
    response, a message in, the answer out (with its outbox row), last active `idle_days` ago."""
    remote = await upstream.conversations.create()
    response = await upstream.responses.create(
        model="gpt-5-mini", input="hello", conversation=remote.id
    )
    when = utcnow() - timedelta(days=idle_days)
    async with sessions() as session:
        account = await get_account(session, channel="whatsapp", external_id=PHONE_NUMBER_ID)
        contact = Contact(
            account_id=account.id, external_id=phone, phone=phone, name="Ana", created_at=when
        )
        session.add(contact)
        await session.flush()
        conversation = Conversation(
            account_id=account.id,
            contact_id=contact.id,
            channel="whatsapp",
            remote_conversation_id=remote.id,
            last_response_id=response.id,
            next_sequence_no=3,
            created_at=when,
            last_message_at=when,
        )
        session.add(conversation)
        await session.flush()
        common = {"conversation_id": conversation.id, "account_id": account.id}
        inbound = Message(
            **common, sequence_no=1, direction="in", sender="customer", text="hello",
            status="answered", meta={}, created_at=when,
        )  # fmt: skip
        answer = Message(
            **common, sequence_no=2, direction="out", sender="agent", text="Echo: hello",
            status="queued", response_id=response.id, meta={}, created_at=when,
        )  # fmt: skip
        session.add_all([inbound, answer])
        await session.flush()
        session.add(Outbox(message_id=answer.id, conversation_id=conversation.id))
        usage = UsageAdd("gpt-5-mini", 10, 0, 5, 0, Decimal("0.001"))
        await add_usage(session, account_id=account.id, usage=usage)
        await session.commit()
        return Seeded(conversation.id, contact.id, remote.id, response.id)


async def test_only_conversations_idle_past_the_limit_go_in_batches_here_and_upstream(
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    llm: LLM,
    openai_sim: OpenAISimulator,
    store: Store,
) -> None:
    idle = [await seed(sessions, upstream, f"3460001{n:04d}", idle_days=DAYS + 5) for n in range(7)]
    kept = [await seed(sessions, upstream, f"3460002{n:04d}", idle_days=DAYS - 1) for n in range(2)]
    usage_before = await store.rows("SELECT requests, input_tokens, cost_usd FROM usage_daily")
    woken: list[bool] = []
    retention = Retention(
        sessions=sessions, days=DAYS, batch=3, on_upstream=lambda: woken.append(True)
    )

    swept = await retention.sweep()

    # 7 conversations in batches of 3: three transactions, each waking the drainer.
    assert (swept.conversations, swept.messages, swept.outbox, swept.contacts) == (7, 14, 7, 7)
    assert swept.upstream == 14 and len(woken) == 3
    assert sorted(r[0] for r in await store.rows("SELECT id FROM conversations")) == sorted(
        k.conversation_id for k in kept
    )
    assert sorted(r[0] for r in await store.rows("SELECT id FROM contacts")) == sorted(
        k.contact_id for k in kept
    )
    assert await store.rows("SELECT count(*) FROM messages") == [(4,)]
    assert await store.rows("SELECT count(*) FROM outbox") == [(2,)]
    # Usage sums are aggregates: they stay.
    assert await store.rows("SELECT requests, input_tokens, cost_usd FROM usage_daily") == (
        usage_before
    )

    drained = await UpstreamDeleter(sessions=sessions, llm=llm, call_timeout=5).drain()
    assert (drained.deleted, drained.missing, drained.failed) == (14, 0, 0)
    assert sorted(openai_sim.deleted_conversations) == sorted(s.remote_id for s in idle)
    assert sorted(openai_sim.deleted_responses) == sorted(s.response_id for s in idle)
    assert all(openai_sim.has_conversation(k.remote_id) for k in kept)
    assert await store.rows("SELECT count(*) FROM upstream_deletions") == [(0,)]


async def test_running_twice_is_harmless_and_a_404_upstream_counts_as_done(
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    llm: LLM,
    openai_sim: OpenAISimulator,
    store: Store,
) -> None:
    gone = await seed(sessions, upstream, "34600030001", idle_days=DAYS * 2)
    retention = Retention(sessions=sessions, days=DAYS)
    deleter = UpstreamDeleter(sessions=sessions, llm=llm, call_timeout=5)
    assert (await retention.sweep()).conversations == 1
    assert (await deleter.drain()).deleted == 2

    again = await retention.sweep()
    assert again.conversations == again.upstream == again.contacts == 0
    assert (await deleter.drain()).deleted == 0
    # Queued once more (a second worker's late copy): the upstream says 404, which is done.
    async with sessions() as session:
        objects = [UpstreamObject(CONVERSATION, gone.remote_id)]
        await queue_deletions(session, objects=objects, reason="retention")
        await session.commit()
    drained = await deleter.drain()
    assert (drained.deleted, drained.missing, drained.failed) == (0, 1, 0)
    assert openai_sim.deleted_conversations == [gone.remote_id]
    assert await store.rows("SELECT count(*) FROM upstream_deletions") == [(0,)]


async def test_a_failed_upstream_delete_is_retried_until_it_succeeds(
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    llm: LLM,
    openai_sim: OpenAISimulator,
    store: Store,
) -> None:
    gone = await seed(sessions, upstream, "34600040001", idle_days=DAYS + 1)
    path = f"/v1/conversations/{gone.remote_id}"
    openai_sim.inject(500, times=2, path=path, method="DELETE")
    await Retention(sessions=sessions, days=DAYS).sweep()

    deleter = UpstreamDeleter(sessions=sessions, llm=llm, call_timeout=5, backoff_base=0.1)
    first = await deleter.drain()
    assert (first.deleted, first.failed) == (1, 1)  # the response went, the conversation not
    (row,) = await store.rows("SELECT kind, attempts, last_error FROM upstream_deletions")
    assert row[0] == "conversation" and row[1] == 1 and "500" in row[2]

    # The drainer's own loop tries again after the backoff, until the upstream takes it.
    task = asyncio.create_task(deleter.run())
    try:
        await openai_sim.wait_for_deletions(conversations=1, timeout=10)
        await store.wait_for_rows("SELECT count(*) FROM upstream_deletions", [(0,)])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.status for r in openai_sim.requests_to(path, method="DELETE")] == [500, 500, 200]
    assert openai_sim.deleted_conversations == [gone.remote_id]


async def test_two_workers_sweeping_and_draining_at_once_delete_each_thing_once(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    settings: Settings,
    openai_sim: OpenAISimulator,
    store: Store,
) -> None:
    seeded = [
        await seed(sessions, upstream, f"3460005{n:04d}", idle_days=DAYS + 3) for n in range(12)
    ]
    # Two workers: each its own engine (its own connections) and its own upstream client.
    engines: list[AsyncEngine] = [create_engine(database_url) for _ in range(2)]
    llms = [build_llm(settings) for _ in range(2)]
    try:
        workers = [create_sessionmaker(engine) for engine in engines]
        sweeps = await asyncio.gather(
            *(Retention(sessions=w, days=DAYS, batch=2).sweep() for w in workers)
        )
        assert sum(s.conversations for s in sweeps) == 12
        assert sum(s.contacts for s in sweeps) == 12
        assert await store.rows("SELECT count(*) FROM conversations") == [(0,)]
        async with sessions() as session:
            assert await pending_deletions(session) == 24

        deleters = [
            UpstreamDeleter(sessions=w, llm=llm, call_timeout=5, batch=3)
            for w, llm in zip(workers, llms, strict=True)
        ]
        drains = await asyncio.gather(*(d.drain() for d in deleters))
    finally:
        for llm in llms:
            await llm.close()
        for engine in engines:
            await engine.dispose()
    assert sum(d.deleted for d in drains) == 24 and sum(d.failed for d in drains) == 0
    deletes = Counter(r.path for r in openai_sim.requests if r.method == "DELETE")
    assert set(deletes.values()) == {1} and len(deletes) == 24
    assert sorted(openai_sim.deleted_conversations) == sorted(s.remote_id for s in seeded)
    assert await store.rows("SELECT count(*) FROM upstream_deletions") == [(0,)]


async def test_unset_keeps_everything(
    sessions: async_sessionmaker[AsyncSession], upstream: AsyncOpenAI, store: Store
) -> None:
    await seed(sessions, upstream, "34600060001", idle_days=3650)
    swept = await Retention(sessions=sessions, days=None).sweep()
    assert swept.conversations == 0
    assert await store.rows("SELECT count(*) FROM conversations") == [(1,)]


async def test_a_responses_api_thread_goes_with_its_records_and_the_user_keeps_their_contact(
    sessions: async_sessionmaker[AsyncSession],
    upstream: AsyncOpenAI,
    llm: LLM,
    openai_sim: OpenAISimulator,
    store: Store,
) -> None:
    answer = await upstream.responses.create(model="gpt-5-mini", input="hi")
    when = utcnow() - timedelta(days=DAYS + 1)
    async with sessions() as session:
        user, _ = await create_user(session, name="ana")
        account, contact = await api_parties(session, user_id=user.id, user_name="ana")
        thread = await new_thread(session, account=account, contact=contact, profile="default")
        session.add(
            ResponseRecord(
                id="resp_parley_1", user_id=user.id, conversation_id=thread.conversation.id,
                status="completed", profile="default", upstream_response_id=answer.id,
                created_at=when,
            )
        )  # fmt: skip
        await session.execute(
            update(Conversation)
            .where(Conversation.id == thread.conversation.id)
            .values(created_at=when, last_message_at=when, last_response_id=answer.id)
        )
        await session.commit()

    swept = await Retention(sessions=sessions, days=DAYS).sweep()
    assert (swept.conversations, swept.responses, swept.contacts) == (1, 1, 0)
    assert await store.rows("SELECT count(*) FROM responses") == [(0,)]
    assert await store.rows("SELECT external_id FROM contacts") == [(f"user:{user.id}",)]
    await UpstreamDeleter(sessions=sessions, llm=llm, call_timeout=5).drain()
    assert openai_sim.deleted_responses == [answer.id]


async def test_an_id_the_upstream_refuses_for_good_is_dropped_not_retried_for_ever(
    sessions: async_sessionmaker[AsyncSession], llm: LLM, openai_sim: OpenAISimulator, store: Store
) -> None:
    async with sessions() as session:
        objects = [UpstreamObject(CONVERSATION, "not-a-conversation-id")]
        await queue_deletions(session, objects=objects, reason="erasure")
        await session.commit()
    openai_sim.inject(400, method="DELETE", message="Invalid 'conversation_id'.")
    drained = await UpstreamDeleter(sessions=sessions, llm=llm, call_timeout=5).drain()
    assert (drained.deleted, drained.missing, drained.failed) == (0, 1, 0)
    assert await store.rows("SELECT count(*) FROM upstream_deletions") == [(0,)]
    assert len([r for r in openai_sim.requests if r.method == "DELETE"]) == 1
