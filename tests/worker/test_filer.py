"""The filer on a real, migrated store (both backends): inbox rows become messages in id
order, in one transaction per batch; a row its channel cannot read is kept, marked, and does
not hold back the rows around it; a body bigger than a transaction's chunk is filed in chunks,
once, in order, even when its filing is cut short between chunks. While the door of the same
process is pressed, the filer waits for it, a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.runtime import parse_webhook
from parley.store.db import create_engine, create_sessionmaker
from parley.store.direct import DirectWrites
from parley.store.migrate import upgrade
from parley.store.models import Message
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.inbox import Arrival, append
from parley.worker import filer as filer_module
from parley.worker.filer import Filer
from tests.events import WatchedEvent
from tests.factories import body_bytes, whatsapp_batch, whatsapp_texts


class RecordingQueue:
    def __init__(self) -> None:
        self.signalled: list[int] = []
        self.any = asyncio.Event()

    async def signal_many(self, conversation_ids: Iterable[int]) -> None:
        self.signalled += list(conversation_ids)
        self.any.set()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def filer(
    sessions: async_sessionmaker[AsyncSession],
    queue: RecordingQueue,
    batch: int,
    chunk: int = 50,
    yield_to: Callable[[], bool] | None = None,
    direct: DirectWrites | None = None,
) -> Filer:
    return Filer(
        sessions=sessions,
        queue=queue,  # type: ignore[arg-type]
        parse=parse_webhook,
        accounts=AccountDirectory(sessions, None, ttl=0),
        batch=batch,
        chunk=chunk,
        poll_interval=0.05,
        yield_to=yield_to,
        direct=direct,
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
    taken, caught_up = [], []
    for _ in range(4):
        taken.append(await the_filer.file_batch())
        caught_up.append(the_filer.caught_up.is_set())
    assert taken == [3, 3, 1, 0]
    # Behind while a transaction takes a full batch (rows may be left), caught up once one
    # takes less: the worker gives way to it meanwhile.
    assert caught_up == [False, False, True, True]
    assert await rows(engine, "SELECT text FROM messages ORDER BY sequence_no") == [
        (t,) for t in texts
    ]


async def test_a_batch_ends_after_the_row_being_filed_while_an_acknowledgement_waits(
    engine: AsyncEngine,
) -> None:
    texts = [f"y{i}" for i in range(7)]
    async with engine.begin() as connection:
        await append(
            connection,
            [
                Arrival("whatsapp", body_bytes(whatsapp_texts("34600000094", [t])), f"c{t}")
                for t in texts
            ],
        )
    acknowledgement_waits = False
    the_filer = filer(
        create_sessionmaker(engine),
        RecordingQueue(),
        batch=3,
        yield_to=lambda: acknowledgement_waits,
    )
    taken = []
    for waits in (False, True, True, False, False):
        acknowledgement_waits = waits
        taken.append(await the_filer.file_batch())

    # Full batches while nobody waits; one row per transaction while someone does (never
    # none, so that the filer still moves).
    assert taken == [3, 1, 1, 2, 0]
    assert await rows(engine, "SELECT text FROM messages ORDER BY sequence_no") == [
        (t,) for t in texts
    ]
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


PHONES = [f"3460000{n:04d}" for n in range(20)]
BIG = [f"big {n}" for n in range(1000)]


async def append_big_body_then(engine: AsyncEngine, *after: str) -> None:
    """The 1,000-message body, then one small body per text of `after` from its first
    customer."""
    arrivals = [Arrival("whatsapp", body_bytes(whatsapp_batch(PHONES, BIG)), "c-big")]
    arrivals += [
        Arrival("whatsapp", body_bytes(whatsapp_texts(PHONES[0], [t])), f"c-{t}") for t in after
    ]
    async with engine.begin() as connection:
        await append(connection, arrivals)


async def filed_texts(engine: AsyncEngine) -> dict[str, list[str]]:
    """Each customer's stored texts, in their conversation's order."""
    found = await rows(
        engine,
        "SELECT c.external_id, m.text FROM messages m "
        "JOIN conversations v ON v.id = m.conversation_id JOIN contacts c ON c.id = v.contact_id "
        "ORDER BY m.conversation_id, m.sequence_no",
    )
    texts: dict[str, list[str]] = {}
    for phone, text_ in found:
        texts.setdefault(str(phone), []).append(str(text_))
    return texts


def sent_in_order(*after: str) -> dict[str, list[str]]:
    expected = {phone: BIG[i :: len(PHONES)] for i, phone in enumerate(PHONES)}
    expected[PHONES[0]] += list(after)
    return expected


async def message_count(engine: AsyncEngine) -> int:
    return int((await rows(engine, "SELECT count(*) FROM messages"))[0][0])


async def test_a_big_body_is_filed_in_chunks_in_order_then_the_next_body(
    engine: AsyncEngine,
) -> None:
    await append_big_body_then(engine, "after")
    queue = RecordingQueue()
    the_filer = filer(create_sessionmaker(engine), queue, batch=8, chunk=100)

    per_transaction = []
    while await the_filer.file_batch():
        before = sum(per_transaction)
        per_transaction.append(await message_count(engine) - before)

    # Ten transactions of 100 messages, the big body's row deleted with the last; the small
    # body after it waits for the next transaction, since it would not fit in that one.
    assert per_transaction == [100] * 10 + [1]
    assert await filed_texts(engine) == sent_in_order("after")
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    assert sorted(set(queue.signalled)) == sorted(
        int(c) for (c,) in await rows(engine, "SELECT id FROM conversations")
    )


async def test_small_bodies_still_share_one_transaction(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await append(
            connection,
            [
                Arrival("whatsapp", body_bytes(whatsapp_texts(phone, ["a", "b", "c"])), phone)
                for phone in PHONES[:5]
            ],
        )
    the_filer = filer(create_sessionmaker(engine), RecordingQueue(), batch=8, chunk=15)
    assert await the_filer.file_batch() == 5
    assert await message_count(engine) == 15


async def test_filing_cut_short_between_chunks_is_finished_once_by_a_new_filer(
    engine: AsyncEngine,
) -> None:
    await append_big_body_then(engine, "after")
    sessions = create_sessionmaker(engine)
    crashed = filer(sessions, RecordingQueue(), batch=8, chunk=100)
    for _ in range(3):
        assert await crashed.file_batch() == 1
    assert await message_count(engine) == 300

    # A process started after the crash knows nothing of the chunks filed: it files the body
    # again from its start, and the 300 messages already stored are not stored twice.
    restarted = filer(sessions, RecordingQueue(), batch=8, chunk=100)
    for _ in range(5):
        assert await restarted.file_batch() == 1
    assert await message_count(engine) == 500
    # The first filer, had it lived on (another process on PostgreSQL), goes on where it was.
    while await crashed.file_batch():
        pass

    assert await filed_texts(engine) == sent_in_order("after")
    assert await rows(
        engine,
        "SELECT count(*), count(DISTINCT channel_message_id) FROM messages",
    ) == [(1001, 1001)]
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


async def test_the_rows_of_a_transaction_are_filed_together_each_message_once_in_order(
    engine: AsyncEngine,
) -> None:
    first = body_bytes(whatsapp_texts(PHONES[0], ["one"]))
    arrivals = [
        Arrival("whatsapp", first, "c-1"),
        Arrival("whatsapp", body_bytes(whatsapp_texts(PHONES[1], ["other"])), "c-2"),
        Arrival("whatsapp", first, "c-1-again"),  # Meta delivered it twice
        Arrival("whatsapp", body_bytes(whatsapp_texts(PHONES[0], ["two", "three"])), "c-3"),
    ]
    async with engine.begin() as connection:
        await append(connection, arrivals)
    queue = RecordingQueue()

    assert await filer(create_sessionmaker(engine), queue, batch=10).file_batch() == 4

    assert await filed_texts(engine) == {PHONES[0]: ["one", "two", "three"], PHONES[1]: ["other"]}
    async with create_sessionmaker(engine)() as session:
        found = await session.execute(select(Message.text, Message.meta))
        correlation = {text_: meta["correlation_id"] for text_, meta in found}
    assert correlation == {"one": "c-1", "other": "c-2", "two": "c-3", "three": "c-3"}
    assert len(queue.signalled) == 2
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


async def _one_backlog_row(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        body = body_bytes(whatsapp_texts("34600000099", ["after the burst"]))
        await append(connection, [Arrival("whatsapp", body, "c-door")])


async def _until_signalled(queue: RecordingQueue, timeout: float) -> None:
    await asyncio.wait_for(queue.any.wait(), timeout=timeout)


@contextlib.asynccontextmanager
async def filing(the_filer: Filer) -> AsyncIterator[None]:
    """The filer's loop running until the block ends."""
    task = asyncio.create_task(the_filer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_filer_waits_while_the_door_is_pressed_and_files_once_it_is_quiet(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filer_module, "DOOR_FIRST_WAIT", 30.0)
    await _one_backlog_row(engine)
    queue = RecordingQueue()
    the_filer = filer(create_sessionmaker(engine), queue, batch=10)
    quiet = WatchedEvent()  # clear: the door is pressed
    the_filer.give_way_to(quiet)
    async with filing(the_filer):
        await asyncio.wait_for(quiet.waited.wait(), timeout=5)
        # Waiting for the door, before its transaction: nothing filed yet.
        assert await rows(engine, "SELECT count(*) FROM messages") == [(0,)]
        quiet.set()
        await _until_signalled(queue, timeout=5)
        assert await rows(engine, "SELECT text FROM messages") == [("after the burst",)]


async def test_a_door_pressed_for_long_still_has_its_webhooks_filed(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filer_module, "DOOR_FIRST_WAIT", 0.3)
    await _one_backlog_row(engine)
    queue = RecordingQueue()
    the_filer = filer(create_sessionmaker(engine), queue, batch=10)
    the_filer.give_way_to(asyncio.Event())  # pressed, and never quiet
    started = time.monotonic()
    async with filing(the_filer):
        await _until_signalled(queue, timeout=5)
        assert time.monotonic() - started >= 0.3  # not before the wait's bound
        assert await rows(engine, "SELECT text FROM messages") == [("after the burst",)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_right_after_a_few_rows_the_filer_lets_more_gather_and_files_them_together(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filer_module, "LINGER", 0.3)
    one = filer(create_sessionmaker(engine), RecordingQueue(), batch=10)

    async def arrive(n: int, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        async with engine.begin() as connection:
            body = body_bytes(whatsapp_texts(f"3460009{n:04d}", [f"m{n}"]))
            await append(connection, [Arrival("whatsapp", body, f"c{n}")])

    await arrive(0)
    started = time.monotonic()
    await one._file_more()  # after a quiet spell: filed at once
    assert time.monotonic() - started < filer_module.LINGER
    await arrive(1)
    late = asyncio.create_task(arrive(2, after=0.1))  # during the linger
    await one._file_more()
    await late
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    texts = await rows(engine, "SELECT text FROM messages ORDER BY id")
    assert texts == [("m0",), ("m1",), ("m2",)]
