"""The reads that delivery and the worker repeat after every drain and turn (due outbox heads,
the next due time, whether a conversation's messages wait), through a session and on SQLite
read on its line without one: the same answers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.direct import DirectWrites
from parley.store.models import Message, Outbox, utcnow
from parley.store.queries.inbound import record_inbound
from parley.store.queries.outbox import (
    conversations_with_due_heads,
    conversations_with_due_heads_directly,
    next_due_at,
    next_due_at_directly,
)
from parley.store.queries.turns import Reply, load_work, record_turn, waits_directly
from tests.factories import inbound_text
from tests.store.test_turns import waiting


async def answered(session: AsyncSession, phone: str, replies: int) -> int:
    """A customer's message answered with `replies` queued replies; returns the conversation."""
    conversation_id, account_id, inbound = await waiting_from(session, phone)
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply(f"r{n}") for n in range(replies)],
    )
    await session.commit()
    return conversation_id


async def waiting_from(session: AsyncSession, phone: str) -> tuple[int, int, list[int]]:
    """A customer's message filed; returns the conversation, the account and the message."""
    (conversation_id,) = await record_inbound(
        session, messages=[inbound_text(f"wamid.{phone}", phone=phone)], correlation_id="c"
    )
    await session.commit()
    account_id, inbound = (
        await session.execute(
            select(Message.account_id, Message.id).where(
                Message.conversation_id == conversation_id, Message.direction == "in"
            )
        )
    ).one()
    await session.commit()
    return conversation_id, account_id, [inbound]


async def heads(
    session: AsyncSession, direct: DirectWrites | None, *, limit: int, exclude: set[int]
) -> tuple[list[int], datetime | None]:
    await session.commit()  # the line free for the direct reads
    if direct is None:
        due = await conversations_with_due_heads(session, limit=limit, exclude=exclude)
        return due, await next_due_at(session)
    due = await conversations_with_due_heads_directly(direct, limit=limit, exclude=exclude)
    return due, await next_due_at_directly(direct)


async def test_only_due_free_heads_count_in_order(
    session: AsyncSession, direct: DirectWrites | None
) -> None:
    await session.connection()  # the engine's line open
    assert await heads(session, direct, limit=10, exclude=set()) == ([], None)
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

    found, next_due = await heads(session, direct, limit=10, exclude={excluded})

    assert found == [due, also_due]
    assert next_due == earliest
    assert (await heads(session, direct, limit=1, exclude={excluded}))[0] == [due]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_whether_work_waits_is_what_loading_it_finds(session: AsyncSession) -> None:
    direct = DirectWrites.of(session.bind)  # type: ignore[arg-type]
    assert direct is not None
    conversation_id, account_id, inbound = await waiting(session, "one")
    other, _, _ = await waiting_from(session, "34611")
    assert await waits_directly(direct, conversation_id=conversation_id)
    assert (await load_work(session, conversation_id=conversation_id)) is not None
    await record_turn(
        session,
        conversation_id=conversation_id,
        account_id=account_id,
        answered=inbound,
        replies=[Reply("done")],
    )
    await session.commit()

    assert not await waits_directly(direct, conversation_id=conversation_id)
    assert (await load_work(session, conversation_id=conversation_id)) is None
    await session.commit()
    assert await waits_directly(direct, conversation_id=other)  # another's still waits
