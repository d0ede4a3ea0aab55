"""The filer on a real, migrated store (both backends): inbox rows become messages in id
order, in one transaction per batch; a row its channel cannot read is kept, marked, and does
not hold back the rows around it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.runtime import parse_webhook
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.inbox import Arrival, append
from parley.worker.filer import Filer
from tests.factories import body_bytes, whatsapp_texts


class RecordingQueue:
    def __init__(self) -> None:
        self.signalled: list[int] = []

    async def signal_many(self, conversation_ids: Iterable[int]) -> None:
        self.signalled += list(conversation_ids)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def filer(sessions: async_sessionmaker[AsyncSession], queue: RecordingQueue, batch: int) -> Filer:
    return Filer(
        sessions=sessions,
        queue=queue,  # type: ignore[arg-type]
        parse=parse_webhook,
        accounts=AccountDirectory(sessions, None, ttl=0),
        batch=batch,
        poll_interval=0.05,
    )


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(sql))]


async def test_an_unreadable_row_is_kept_marked_and_the_batch_is_filed_in_order(
    engine: AsyncEngine,
) -> None:
    arrivals = [
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000091", ["one"])), "c-1"),
        Arrival("whatsapp", b'{"object": "not whatsapp"}', "c-bad"),
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000091", ["two"])), "c-2"),
        Arrival("nochannel", b"{}", "c-unknown"),
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000092", ["three"])), "c-3"),
    ]
    async with engine.begin() as connection:
        await append(connection, arrivals)
    queue = RecordingQueue()

    assert await filer(create_sessionmaker(engine), queue, batch=10).file_batch() == 5

    assert await rows(
        engine, "SELECT text, sequence_no FROM messages ORDER BY conversation_id, sequence_no"
    ) == [("one", 1), ("two", 2), ("three", 1)]
    kept = await rows(engine, "SELECT correlation_id, failed_at IS NOT NULL, error FROM inbox")
    assert [(cid, failed) for cid, failed, _ in kept] == [("c-bad", True), ("c-unknown", True)]
    assert "whatsapp_business_account" in str(kept[0][2])
    assert len(queue.signalled) == 2  # both customers' conversations have work
    # Marked rows are not taken again.
    assert await filer(create_sessionmaker(engine), queue, batch=10).file_batch() == 0


async def test_a_backlog_is_filed_in_batches_oldest_first(engine: AsyncEngine) -> None:
    texts = [f"m{i}" for i in range(7)]
    async with engine.begin() as connection:
        await append(
            connection,
            [
                Arrival("whatsapp", body_bytes(whatsapp_texts("34600000093", [t])), f"c{t}")
                for t in texts
            ],
        )
    the_filer = filer(create_sessionmaker(engine), RecordingQueue(), batch=3)
    assert [await the_filer.file_batch() for _ in range(4)] == [3, 3, 1, 0]
    assert await rows(engine, "SELECT text FROM messages ORDER BY sequence_no") == [
        (t,) for t in texts
    ]
