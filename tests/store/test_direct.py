"""Whole write transactions sent without a session (`store.direct`), on SQLite's line and by
asyncpg itself on PostgreSQL: the same rows, guards and errors as through one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import ConversationGone, LeaseLost
from parley.store import db
from parley.store import direct as direct_module
from parley.store.direct import DirectWrites, Step, step
from parley.store.models import (
    Account,
    Conversation,
    Message,
    Outbox,
    ResponseRecord,
    UsageDaily,
    utcnow,
)
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import claim_head, mark_sent_steps
from parley.store.queries.responses import ResponseClosed, guard_status_step
from parley.store.queries.turns import Reply, record_turn_directly, start_attempt_directly
from tests.factories import inbound_text
from tests.store.test_turns import USAGE, waiting


@pytest.fixture
async def direct(sessions: async_sessionmaker[AsyncSession], backend: str) -> DirectWrites:
    engine = sessions.kw["bind"]
    if backend == "postgres":
        assert DirectWrites.of(engine) is None  # the filer's, SQLite's only
        found = DirectWrites.on_postgresql(engine)
        assert found is not None and found.ready
        return found
    found = DirectWrites.of(engine)
    assert found is not None  # the one-trip driver is SQLite's default
    assert DirectWrites.on_postgresql(engine) is None
    assert not found.ready  # no session has opened the line yet
    async with sessions() as session:
        await session.execute(select(1))
    assert found.ready
    return found


def one_trip(trips: list[str], backend: str) -> bool:
    """On SQLite, whether the transaction went in one trip to the database's thread (on
    PostgreSQL each statement is a round trip to the server)."""
    return backend == "postgres" or trips == ["run_trip"]


async def test_a_turns_outcome_sent_directly_is_numbered_and_queued_as_through_a_session(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites, trips: list[str], backend: str
) -> None:
    async with sessions() as session:
        conversation_id, account_id, inbound = await waiting(session, "one", "two")
    trips.clear()
    await record_turn_directly(
        direct,
        sessions,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,  # an expanding IN list
        replies=[Reply("noted", deliver=False), Reply("a", meta={"k": [1]}), Reply("b")],
        last_response_id="resp_1",
        usage=USAGE,
        agent_turn=True,
    )
    assert one_trip(trips, backend)  # BEGIN, claim, counter, replies, outbox, usage, COMMIT
    async with sessions() as session:
        rows = await session.execute(
            select(Message.sequence_no, Message.direction, Message.text, Message.status)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.sequence_no)
        )
        assert [tuple(row) for row in rows] == [
            (1, "in", "one", "answered"),
            (2, "in", "two", "answered"),
            (3, "internal", "noted", "done"),
            (4, "out", "a", "queued"),
            (5, "out", "b", "queued"),
        ]
        a = await session.scalar(select(Message).where(Message.text == "a"))
        assert a is not None
        assert a.meta["k"] == [1]  # JSON bound as SQLAlchemy binds it
        assert a.reply_to_id == inbound[-1]
        assert isinstance(a.created_at, datetime)  # a date bound (as text on SQLite), read back
        queued = await session.scalars(
            select(Message.text).join(Outbox, Outbox.message_id == Message.id).order_by(Outbox.id)
        )
        assert list(queued) == ["a", "b"]
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        assert conversation.next_sequence_no == 6
        assert conversation.last_response_id == "resp_1"
        usage = await session.scalar(select(UsageDaily))
        assert usage is not None
        assert (usage.input_tokens, usage.output_tokens, usage.requests) == (3, 2, 1)


async def test_a_turns_outcome_tells_in_its_trip_whether_more_messages_wait(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites, trips: list[str], backend: str
) -> None:
    async with sessions() as session:
        conversation_id, account_id, inbound = await waiting(session, "one", "two")
    outcome = {"conversation_id": conversation_id, "account_id": account_id}
    trips.clear()
    more = await record_turn_directly(
        direct, sessions, **outcome, answered=inbound[:1], replies=[Reply("a")], then_waiting=True
    )
    assert more is True  # "two" was not this turn's
    assert one_trip(trips, backend)  # read with the outcome, in its trip
    more = await record_turn_directly(
        direct, sessions, **outcome, answered=inbound[1:], replies=[Reply("b")], then_waiting=True
    )
    assert more is False
    assert await record_turn_directly(direct, sessions, **outcome, answered=[], replies=[]) is None


async def test_a_turn_sent_directly_that_lost_its_lease_or_conversation_stores_nothing(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    async with sessions() as session:
        conversation_id, account_id, inbound = await waiting(session, "hi")

    async def answer(text: str) -> None:
        await record_turn_directly(
            direct,
            sessions,
            conversation_id=conversation_id,
            account_id=account_id,
            answered=inbound,
            replies=[Reply(text)],
            usage=USAGE,
            agent_turn=True,
        )

    await answer("first")
    with pytest.raises(LeaseLost):  # its inputs were answered already
        await answer("second")
    async with sessions() as session:
        replies = await session.scalars(select(Message.text).where(Message.direction == "out"))
        assert list(replies) == ["first"]
        assert await session.scalar(select(UsageDaily.requests)) == 1
        await session.execute(
            update(Conversation).where(Conversation.id == conversation_id).values(mode="human")
        )
        await session.execute(
            update(Message).where(Message.id == inbound[0]).values(status="received")
        )
        await session.commit()
    with pytest.raises(LeaseLost):  # a person took the conversation
        await answer("third")
    async with sessions() as session:
        await session.execute(delete(Message).where(Message.conversation_id == conversation_id))
        await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
        await session.commit()
    with pytest.raises(ConversationGone):
        await answer("fourth")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
        assert await session.scalar(select(UsageDaily.requests)) == 1
    await answer_elsewhere_still_writes(sessions)


async def answer_elsewhere_still_writes(sessions: async_sessionmaker[AsyncSession]) -> None:
    """After refusals, the line is free: a session's transaction goes through at once."""
    async with sessions() as session:
        await session.execute(update(Account).values(updated_at=utcnow()))
        await session.commit()


async def test_a_guard_ahead_of_the_turn_that_refuses_keeps_nothing_of_it(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    async with sessions() as session:
        conversation_id, account_id, inbound = await waiting(session, "hi")
    with pytest.raises(ResponseClosed):  # no such response is open
        await record_turn_directly(
            direct,
            sessions,
            before=[guard_status_step(direct, response_id="resp_none", status="completed")],
            conversation_id=conversation_id,
            account_id=account_id,
            answered=inbound,
            replies=[Reply("hello")],
            usage=USAGE,
        )
    async with sessions() as session:
        assert await session.scalar(select(Message.status).where(Message.id == inbound[0])) == (
            "received"
        )
        assert await session.scalar(select(func.count()).select_from(Outbox)) == 0
        assert await session.scalar(select(func.count()).select_from(UsageDaily)) == 0
        assert await session.scalar(select(func.count()).select_from(ResponseRecord)) == 0
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        assert conversation.next_sequence_no == 2
    await answer_elsewhere_still_writes(sessions)


async def test_a_broken_constraint_raises_sqlalchemys_error_and_rolls_back(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    async with sessions() as session:
        await waiting(session, "hi")
        account = await session.scalar(select(Account))
        assert account is not None
        copied = {"channel": account.channel, "external_id": account.external_id}
    bump = direct.prepared("bump", lambda: update(Account).values(name="renamed"), ["name"])
    twin = direct.prepared("twin", lambda: insert(Account), [*copied, "name"])
    with pytest.raises(IntegrityError):  # the same channel and external id again
        await direct.commit([step(bump, {"name": "renamed"}), step(twin, {**copied, "name": "x"})])
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Account)) == 1
        assert await session.scalar(select(Account.name)) != "renamed"
    await answer_elsewhere_still_writes(sessions)


async def test_a_send_recorded_directly_leaves_the_outbox_and_marks_the_message_sent(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    async with sessions() as session:
        conversation_id, account_id, inbound = await waiting(session, "hi")
    await record_turn_directly(
        direct,
        sessions,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("one"), Reply("two")],
    )
    async with sessions() as session:
        delivery = await claim_head(
            session, conversation_id=conversation_id, hold=timedelta(seconds=30), commits=True
        )
        await session.commit()
    assert delivery is not None and delivery.message.text == "one"
    await direct.commit(
        mark_sent_steps(
            direct,
            outbox_id=delivery.outbox_id,
            message_id=delivery.message.id,
            channel_message_id="wamid.out.1",
        )
    )
    async with sessions() as session:
        rows = await session.execute(
            select(Message.text, Message.status, Message.channel_message_id)
            .where(Message.direction == "out")
            .order_by(Message.sequence_no)
        )
        assert [tuple(row) for row in rows] == [
            ("one", "sent", "wamid.out.1"),
            ("two", "queued", None),
        ]
        left = await session.scalars(
            select(Message.text).join(Outbox, Outbox.message_id == Message.id)
        )
        assert list(left) == ["two"]


async def test_a_turn_started_directly_counts_its_attempt_and_the_customers_handled_messages(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    async with sessions() as session:
        conversation_id, account_id, first = await waiting(session, "one")
    await record_turn_directly(
        direct,
        sessions,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=first,
        replies=[Reply("hello")],
    )
    async with sessions() as session:
        await record_inbound(
            session,
            messages=[inbound_text("wamid.two", "two", phone="34600")],
            correlation_id="c",
        )
        await session.commit()
        (second,) = await session.scalars(select(Message.id).where(Message.text == "two"))
    since = utcnow() - timedelta(minutes=1)
    for attempt in (1, 2):
        handled = await start_attempt_directly(
            direct, message_ids=[second], conversation_id=conversation_id, since=since
        )
        assert handled == 1  # "one", answered; not "two", which waits
        async with sessions() as session:
            assert await session.scalar(select(Message.attempts).where(Message.id == second)) == (
                attempt
            )
    assert (
        await start_attempt_directly(
            direct, message_ids=[second], conversation_id=conversation_id, since=utcnow()
        )
        == 0  # nothing handled since now: the date is bound as the database compares it
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_bounded_transaction_waits_its_turn_for_the_pools_one_connection(
    sessions: async_sessionmaker[AsyncSession], direct: DirectWrites
) -> None:
    engine = sessions.kw["bind"]
    bounded = DirectWrites.of(engine, bounded=True)
    assert bounded is not None and bounded.ready  # the pool of one has opened its connection
    async with sessions() as session:
        await waiting(session, "hi")
    rename = bounded.prepared("rename", lambda: update(Account).values(name="renamed"), ["name"])
    async with engine.connect():  # the pool's one connection, checked out, no transaction
        writing = asyncio.create_task(bounded.commit([step(rename, {"name": "renamed"})]))
        other = asyncio.create_task(direct.commit([step(rename, {"name": "other"})]))
        # Unbounded, the first task's trip would have been queued on the line before the
        # second's, and be done by now.
        await asyncio.wait_for(other, 5)
        assert not writing.done()
    await asyncio.wait_for(writing, 5)  # the connection given back: its place with it
    async with sessions() as session:
        assert await session.scalar(select(Account.name)) == "renamed"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_on_postgresql_a_connection_the_server_dropped_fails_one_transaction_only(
    sessions: async_sessionmaker[AsyncSession], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessions() as session:
        await waiting(session, "hi")
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", 3600.0)  # the pool hands it out unchecked
    engine, other = db.create_engine(database_url, pool_size=1), db.create_engine(database_url)
    try:
        direct = DirectWrites.on_postgresql(engine)
        assert direct is not None
        rename = direct.prepared("rename", lambda: update(Account).values(name="n"), ["name"])
        await direct.commit([step(rename, {"name": "first"})])  # the pool's one connection
        async with other.connect() as connection:
            dropped = await connection.scalar(text(_TERMINATE))
        assert dropped >= 1
        with pytest.raises(DBAPIError):
            await direct.commit([step(rename, {"name": "lost"})])
        await direct.commit([step(rename, {"name": "again"})])  # on a new connection
        async with other.connect() as connection:
            assert await connection.scalar(select(Account.name)) == "again"
    finally:
        await engine.dispose()
        await other.dispose()


_TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_on_postgresql_a_transaction_cancelled_midway_keeps_nothing(
    sessions: async_sessionmaker[AsyncSession], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessions() as session:
        await waiting(session, "hi")
    # The statement it is cancelled in holds an advisory lock until its transaction ends.
    sleeping = Step(f"SELECT pg_advisory_xact_lock({_HELD}), pg_sleep(30)", ())
    sent = asyncio.Event()
    run = direct_module._run

    async def noting(driver: Any, statement: Step) -> list[Any]:
        if statement is sleeping:
            sent.set()  # the waiter wakes once the statement is on its way, awaited
        return await run(driver, statement)

    monkeypatch.setattr(direct_module, "_run", noting)
    engine, other = db.create_engine(database_url, pool_size=1), db.create_engine(database_url)
    try:
        direct = DirectWrites.on_postgresql(engine)
        assert direct is not None
        rename = direct.prepared("rename", lambda: update(Account).values(name="n"), ["name"])
        task = asyncio.create_task(direct.commit([step(rename, {"name": "half"}), sleeping]))
        await asyncio.wait_for(sent.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The pool's one connection was not given back mid-statement: the next transaction
        # goes through, and the cancelled one kept nothing.
        await asyncio.wait_for(direct.commit([step(rename, {"name": "after"})]), 10)
        async with other.connect() as connection:
            assert await connection.scalar(select(Account.name)) == "after"
            # The sleep runs no more on the server: its lock is free (the server grants it
            # once the cancelled transaction ended, within the timeout).
            await connection.execute(text("SET statement_timeout = '10s'"))
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_HELD})"))
    finally:
        await engine.dispose()
        await other.dispose()


_HELD = 7_301_022
"""An advisory lock key of the cancellation test's own."""
