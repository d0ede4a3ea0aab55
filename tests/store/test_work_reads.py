"""The reads that delivery and the worker repeat after every drain and turn (due outbox heads,
the next due time, whether a conversation's messages wait), through a session and on SQLite
read on its line without one: the same answers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.direct import DirectWrites, Reads
from parley.store.models import Account, Contact, Conversation, Message, Outbox, utcnow
from parley.store.queries.outbox import conversations_with_due_heads, next_due_at
from parley.store.queries.turns import Reply, load_work, record_turn, waits_directly
from tests.store.test_turns import waiting


async def answered(session: AsyncSession, phone: str, replies: int) -> int:
    """A customer's message answered with `replies` queued replies; returns the conversation."""
    conversation_id, account_id, inbound = await waiting(session, f"m{phone}", phone=phone)
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply(f"r{n}") for n in range(replies)],
    )
    await session.commit()
    return conversation_id


async def heads(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    direct: DirectWrites | None,
    *,
    limit: int,
    exclude: set[int],
) -> tuple[list[int], datetime | None]:
    await session.commit()  # the line free for the direct reads
    reads = Reads(sessions, direct)
    due = await conversations_with_due_heads(reads, limit=limit, exclude=exclude)
    return due, await next_due_at(reads)


async def test_only_due_free_heads_count_in_order(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], direct: DirectWrites | None
) -> None:
    await session.connection()  # the engine's line open
    assert await heads(session, sessions, direct, limit=10, exclude=set()) == ([], None)
    due, held, later, excluded, also_due = [
        await answered(session, f"3460{n}", replies=2) for n in range(5)
    ]
    now = utcnow()
    head = select(Outbox.id).where(Outbox.conversation_id == later).order_by(Outbox.id).limit(1)
    await session.execute(  # the head in backoff holds back the row behind it, which is due
        update(Outbox)
        .where(Outbox.id == head.scalar_subquery())
        .values(next_attempt_at=now + timedelta(minutes=5))
    )
    await session.execute(
        update(Outbox)
        .where(Outbox.conversation_id == held)
        .values(locked_until=now + timedelta(minutes=1))
    )
    earliest = now - timedelta(hours=1)
    await session.execute(
        update(Outbox).where(Outbox.conversation_id == also_due).values(next_attempt_at=earliest)
    )

    found, next_due = await heads(session, sessions, direct, limit=10, exclude={excluded})

    assert found == [due, also_due]
    assert next_due == earliest
    assert (await heads(session, sessions, direct, limit=1, exclude={excluded}))[0] == [due]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_whether_work_waits_is_what_loading_it_finds(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    direct = DirectWrites.of(session.bind)  # type: ignore[arg-type]
    assert direct is not None
    conversation_id, account_id, inbound = await waiting(session, "one")
    other, _, _ = await waiting(session, "two", phone="34611")
    await session.commit()
    reads = Reads(sessions, direct)
    assert await waits_directly(direct, conversation_id=conversation_id)
    assert (await load_work(reads, conversation_id=conversation_id)) is not None
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("done")],
    )
    await session.commit()

    assert not await waits_directly(direct, conversation_id=conversation_id)
    assert (await load_work(reads, conversation_id=conversation_id)) is None
    await session.commit()
    assert await waits_directly(direct, conversation_id=other)  # another's still waits


async def test_a_turns_work_holds_every_column_as_a_session_loads_it(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], direct: DirectWrites | None
) -> None:
    conversation_id, _, _ = await waiting(session, "one", "two")
    await session.execute(  # values of every kind the columns convert: JSON, dates, none
        update(Message)
        .where(Message.conversation_id == conversation_id)
        .values(meta={"correlation_id": "c", "n": [1, 2]}, reply_to_id=None)
    )
    await session.commit()

    work = await load_work(Reads(sessions, direct), conversation_id=conversation_id)

    assert work is not None
    made = [work.conversation, work.account, work.contact, *work.pending]
    stored = [
        await session.get(Conversation, conversation_id),
        await session.get(Account, work.account.id),
        await session.get(Contact, work.contact.id),
        *[await session.get(Message, m.id) for m in work.pending],
    ]
    assert [m.text for m in work.pending] == ["one", "two"]
    for one, loaded in zip(made, stored, strict=True):
        assert type(one) is type(loaded)
        state = inspect(one)
        assert state.detached and not state.modified and not state.expired_attributes
        columns = [attribute.key for attribute in inspect(type(one)).column_attrs]
        assert {c: getattr(one, c) for c in columns} == {c: getattr(loaded, c) for c in columns}
    assert work.pending[0].meta == {"correlation_id": "c", "n": [1, 2]}
    assert work.pending[0].created_at.tzinfo is not None
