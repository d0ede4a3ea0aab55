"""The reads that delivery and the worker repeat after every drain and turn (due outbox heads,
the next due time, whether a conversation's messages wait), through a session and without
one (on SQLite's line, or by asyncpg itself): the same answers."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.store.direct import DirectWrites, Reads
from parley.store.models import Account, Contact, Conversation, Message, Outbox, utcnow
from parley.store.queries.outbox import due_heads
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
    due = await due_heads(Reads(sessions, direct), limit=limit, exclude=exclude)
    return due.conversations, due.next_at


async def test_only_due_free_heads_count_in_order(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], outcomes: DirectWrites | None
) -> None:
    await session.connection()  # the engine's line open
    assert await heads(session, sessions, outcomes, limit=10, exclude=set()) == ([], None)
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
    hold_ends = now + timedelta(minutes=1)
    await session.execute(
        update(Outbox).where(Outbox.conversation_id == held).values(locked_until=hold_ends)
    )
    earliest = now - timedelta(hours=1)
    await session.execute(
        update(Outbox).where(Outbox.conversation_id == also_due).values(next_attempt_at=earliest)
    )

    found, next_at = await heads(session, sessions, outcomes, limit=10, exclude={excluded})

    assert found == [due, also_due]
    # The due and free heads (the excluded one's too) are started or being drained: the next
    # look is when the held head is free again, before the one in backoff is due.
    assert next_at == hold_ends
    assert await heads(session, sessions, outcomes, limit=1, exclude={excluded}) == (
        [due],
        hold_ends,
    )
    # A held head whose next attempt comes after its hold: looked at again at the attempt.
    attempt = now + timedelta(minutes=2)
    await session.execute(
        update(Outbox).where(Outbox.conversation_id == held).values(next_attempt_at=attempt)
    )
    assert (await heads(session, sessions, outcomes, limit=10, exclude=set()))[1] == attempt
    await session.execute(update(Outbox).values(locked_until=None, next_attempt_at=earliest))
    assert await heads(session, sessions, outcomes, limit=10, exclude=set()) == (
        [due, held, later, excluded, also_due],
        None,  # every head due and free: nothing to look again for
    )


async def test_whether_work_waits_is_what_loading_it_finds(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    engine = session.bind
    direct = DirectWrites.of(engine) or DirectWrites.on_postgresql(engine)  # type: ignore[arg-type]
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
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], outcomes: DirectWrites | None
) -> None:
    conversation_id, _, _ = await waiting(session, "one", "two")
    await session.execute(  # values of every kind the columns convert: JSON, dates, none
        update(Message)
        .where(Message.conversation_id == conversation_id)
        .values(meta={"correlation_id": "c", "n": [1, 2]}, reply_to_id=None)
    )
    await session.commit()

    work = await load_work(Reads(sessions, outcomes), conversation_id=conversation_id)

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
