"""The inbox writer on SQLite goes ahead of the shared connection: webhooks that arrive while
its commit waits for the file are committed in a row before the shared connection's next
transaction, so none of them waits for a whole transaction of the filer or a turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.ingress.inbox import PRESSED, InboxUnavailable, InboxWriter
from parley.store import db
from parley.store.db import create_engine, create_inbox_engine, priority_pending
from parley.store.migrate import upgrade
from parley.store.queries.inbox import Arrival
from tests.factories import body_bytes, whatsapp_texts


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_webhooks_waiting_for_the_file_are_committed_before_the_next_transaction(
    shared: AsyncEngine,
) -> None:
    own = create_engine(str(shared.url), durable=True, ahead_of=shared)
    held_back: list[bool] = []  # at each commit: is the shared connection still held back?
    writer = InboxWriter(
        own,
        max_batch=1,  # one webhook per commit
        timeout=10,
        on_commit=lambda: held_back.append(priority_pending(shared)),
    )
    writer.start()

    async def next_transaction_sees() -> int:
        async with shared.begin() as connection:
            return int(await connection.scalar(text("SELECT count(*) FROM inbox")) or 0)

    bodies = [body_bytes(whatsapp_texts(f"3460009{n:04d}", ["x"])) for n in range(3)]
    try:
        assert not priority_pending(shared)
        async with shared.begin() as connection:  # a turn holds the file
            await connection.execute(text("SELECT 1"))
            appends = [
                asyncio.create_task(writer.append(Arrival("whatsapp", body, "c")))
                for body in bodies
            ]
            await until(lambda: priority_pending(shared))
            following = asyncio.create_task(next_transaction_sees())
        await asyncio.gather(*appends)
        # Three commits in a row, the shared connection held back from the first to the last,
        # and its next transaction after them all.
        assert held_back == [True, True, True]
        assert await following == 3
        assert writer.commits == 3
        assert not priority_pending(shared)
    finally:
        await writer.close()
        await own.dispose()


async def test_the_writer_begins_once_the_shared_transaction_ends_not_in_sqlites_busy_wait(
    shared: AsyncEngine,
) -> None:
    """With no busy timeout at all on the writer's connection, a BEGIN tried while the shared
    connection holds the write lock would fail at once ("database is locked"): every commit
    succeeding proves the writer waited for the shared transaction's end, not in SQLite."""
    own = create_engine(str(shared.url), durable=True, ahead_of=shared)

    @event.listens_for(own.sync_engine, "connect")
    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    writer = InboxWriter(own, max_batch=1, timeout=10)
    writer.start()
    body = body_bytes(whatsapp_texts("34600090001", ["x"]))
    try:
        for _ in range(3):
            async with shared.begin() as connection:  # a turn holds the write lock
                await connection.execute(text("DELETE FROM inbox WHERE id < 0"))
                append = asyncio.create_task(writer.append(Arrival("whatsapp", body, "c")))
                await until(lambda: priority_pending(shared))
                assert not append.done()
            await append  # raised InboxUnavailable had the BEGIN been refused
        assert writer.commits == 3
    finally:
        await writer.close()
        await own.dispose()


def _arrivals(count: int, first: int = 0) -> list[Arrival]:
    return [
        Arrival("whatsapp", body_bytes(whatsapp_texts(f"3460008{n:04d}", ["x"])), f"c{n}")
        for n in range(first, first + count)
    ]


@pytest.fixture
async def inbox_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The writer's engine as `parley serve` and `parley api` make it: on SQLite a priority
    writer of the shared connection's file, on PostgreSQL an autocommit engine of its own."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    own = create_inbox_engine(database_url) or create_engine(
        database_url, durable=True, ahead_of=engine
    )
    yield own
    await own.dispose()
    await engine.dispose()


async def _stored(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT correlation_id FROM inbox ORDER BY id"))
        return [row[0] for row in rows]


async def test_webhooks_arriving_together_are_committed_in_batches_of_at_most_max_batch(
    inbox_engine: AsyncEngine,
) -> None:
    engine = inbox_engine
    writer = InboxWriter(engine, max_batch=10, timeout=10)
    writer.start()
    arrivals = _arrivals(45)
    try:
        # All 45 join before the writer runs again: four full batches and one of five.
        await asyncio.gather(*(writer.append(arrival) for arrival in arrivals))
        assert writer.commits == 5
        assert await _stored(engine) == [a.correlation_id for a in arrivals]
    finally:
        await writer.close()


async def test_the_door_is_pressed_while_commits_take_several_webhooks_and_quiet_once_idle(
    inbox_engine: AsyncEngine,
) -> None:
    quiet_at_commits: list[bool] = []
    writer = InboxWriter(
        inbox_engine,
        max_batch=PRESSED * 2,
        timeout=10,
        on_commit=lambda: quiet_at_commits.append(writer.quiet.is_set()),
    )
    writer.start()
    try:
        assert writer.quiet.is_set()
        # Arriving together: commits of PRESSED webhooks or more, each one pressed.
        # Two full batches and one of PRESSED.
        await asyncio.gather(*(writer.append(a) for a in _arrivals(PRESSED * 4 + PRESSED)))
        assert writer.commits == 3
        assert quiet_at_commits == [False] * 3
        await asyncio.wait_for(writer.quiet.wait(), timeout=5)  # nothing waits: quiet
        # Fewer together than PRESSED, then one at a time: quiet at each commit.
        await asyncio.gather(*(writer.append(a) for a in _arrivals(PRESSED - 1, first=100)))
        await writer.append(_arrivals(1, first=200)[0])
        assert writer.commits == 5
        assert quiet_at_commits[3:] == [True, True]
    finally:
        await writer.close()


async def test_a_batch_is_stored_whole_or_not_at_all(inbox_engine: AsyncEngine) -> None:
    writer = InboxWriter(inbox_engine, max_batch=10, timeout=10)
    writer.start()
    try:
        arrivals = _arrivals(5)
        # A row the store refuses (NOT NULL), in the middle of the batch: on PostgreSQL the
        # batch is one INSERT of many rows in autocommit mode, atomic as one statement.
        arrivals[2] = Arrival(None, b"{}", "refused")  # type: ignore[arg-type]
        outcomes = await asyncio.gather(
            *(writer.append(arrival) for arrival in arrivals), return_exceptions=True
        )
        assert writer.commits == 0
        assert all(isinstance(outcome, InboxUnavailable) for outcome in outcomes)
        assert await _stored(inbox_engine) == []  # none of the batch: all were answered 503
        later = _arrivals(3, first=5)
        await asyncio.gather(*(writer.append(arrival) for arrival in later))
        assert await _stored(inbox_engine) == [a.correlation_id for a in later]
    finally:
        await writer.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_once_its_connection_is_open_a_commit_is_one_trip_without_the_engine(
    inbox_engine: AsyncEngine,
) -> None:
    begun: list[object] = []
    event.listen(inbox_engine.sync_engine, "begin", begun.append)
    writer = InboxWriter(inbox_engine, max_batch=10, timeout=10)
    writer.start()
    try:
        await writer.append(_arrivals(1)[0])  # the first opens the writer's connection
        assert len(begun) == 1
        later = _arrivals(4, first=1)
        await asyncio.gather(*(writer.append(arrival) for arrival in later))
        refused = [*_arrivals(2, first=5), Arrival(None, b"{}", "refused")]  # type: ignore[arg-type]
        outcomes = await asyncio.gather(
            *(writer.append(arrival) for arrival in refused), return_exceptions=True
        )
        assert all(isinstance(outcome, InboxUnavailable) for outcome in outcomes)
        await writer.append(_arrivals(1, first=8)[0])
        assert len(begun) == 1  # no transaction of the engine's after the first
        assert writer.commits == 3
        # Stored as through the engine, and a refused batch not at all.
        assert await _stored(inbox_engine) == ["c0", "c1", "c2", "c3", "c4", "c8"]
        async with inbox_engine.connect() as connection:
            times = await connection.execute(text("SELECT received_at FROM inbox"))
            assert all(isinstance(row[0], str) and row[0][:2] == "20" for row in times)
    finally:
        await writer.close()


async def test_a_commit_of_more_rows_than_one_insert_takes_keeps_their_order(
    inbox_engine: AsyncEngine,
) -> None:
    """A batch goes in as INSERTs of up to 200 rows each (`append_directly`, `append_held`),
    in the order the webhooks came."""
    writer = InboxWriter(inbox_engine, max_batch=256, timeout=10)
    writer.start()
    try:
        await writer.append(_arrivals(1)[0])  # the first opens the writer's connection
        later = _arrivals(230, first=1)
        await asyncio.gather(*(writer.append(arrival) for arrival in later))
        assert writer.commits == 2
        assert await _stored(inbox_engine) == [f"c{n}" for n in range(231)]
    finally:
        await writer.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_on_postgresql_the_writer_holds_its_connection_only_while_webhooks_keep_coming(
    inbox_engine: AsyncEngine,
) -> None:
    pool = inbox_engine.sync_engine.pool
    checkouts: list[object] = []
    event.listen(pool, "checkout", lambda *_: checkouts.append(None))
    writer = InboxWriter(inbox_engine, max_batch=2, timeout=10)
    writer.start()
    try:
        await asyncio.gather(*(writer.append(arrival) for arrival in _arrivals(8)))
        assert writer.commits == 4
        assert len(checkouts) == 1  # four commits in a row on one checkout
        await until(lambda: pool.checkedout() == 0)  # resting: back in the pool
        await writer.append(_arrivals(1, first=8)[0])
        assert len(checkouts) == 2
        assert writer.commits == 5
    finally:
        await writer.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_on_postgresql_a_connection_the_server_dropped_costs_one_batch(
    inbox_engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's connection, dropped by the server between two commits and handed out
    again unchecked: that batch is refused (the channel delivers it again), and the next one
    commits on a new connection."""
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", 3600.0)  # the pool hands it out unchecked
    writer = InboxWriter(inbox_engine, max_batch=10, timeout=10)
    writer.start()
    other = create_engine(database_url)
    try:
        await writer.append(_arrivals(1)[0])
        async with other.connect() as connection:
            dropped = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert dropped == 1  # the writer's
        with pytest.raises(InboxUnavailable, match="commit failed"):
            await writer.append(_arrivals(1, first=1)[0])
        await writer.append(_arrivals(1, first=2)[0])
        assert writer.commits == 2
        assert await _stored(inbox_engine) == ["c0", "c2"]
    finally:
        await writer.close()
        await other.dispose()


async def test_closing_commits_what_is_waiting_first(inbox_engine: AsyncEngine) -> None:
    engine = inbox_engine
    writer = InboxWriter(engine, max_batch=4, timeout=10)
    writer.start()
    arrivals = _arrivals(10)
    appends = [asyncio.create_task(writer.append(arrival)) for arrival in arrivals]
    await asyncio.sleep(0)  # every append has joined a batch; none is committed yet
    assert writer.commits == 0
    await writer.close()
    assert all(task.done() and task.exception() is None for task in appends)
    assert await _stored(engine) == [a.correlation_id for a in arrivals]


async def test_a_batch_not_committed_in_time_is_refused_and_its_rows_still_land(
    shared: AsyncEngine,
) -> None:
    """Every webhook of a batch whose commit waits past the timeout is answered 503 (the
    channel delivers it again, filed then as a known message id); the commit itself goes on."""
    own = create_engine(str(shared.url), durable=True, ahead_of=shared)
    writer = InboxWriter(own, max_batch=256, timeout=0.3)
    writer.start()
    arrivals = _arrivals(3)
    try:
        async with shared.begin() as connection:  # a turn holds the write lock past the timeout
            await connection.execute(text("DELETE FROM inbox WHERE id < 0"))
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(writer.append(arrival) for arrival in arrivals), return_exceptions=True
            )
            waited = time.monotonic() - started
        assert [type(outcome) for outcome in outcomes] == [InboxUnavailable] * 3
        assert all("in time" in str(outcome) for outcome in outcomes)
        assert 0.25 < waited < 5
        await until(lambda: writer.commits == 1)
        assert await _stored(own) == [a.correlation_id for a in arrivals]
    finally:
        await writer.close()
        await own.dispose()


async def test_webhooks_past_the_waiting_bound_are_refused_at_once(shared: AsyncEngine) -> None:
    own = create_engine(str(shared.url), durable=True, ahead_of=shared)
    writer = InboxWriter(own, max_batch=1, timeout=10)  # at most 16 waiting
    writer.start()
    arrivals = _arrivals(20)
    try:
        async with shared.begin() as connection:  # the store is stalled
            await connection.execute(text("DELETE FROM inbox WHERE id < 0"))
            appends = [asyncio.create_task(writer.append(arrival)) for arrival in arrivals]
            await until(lambda: any(task.done() for task in appends))
            refused = [task for task in appends if task.done()]
            for task in refused:
                error = task.exception()
                assert isinstance(error, InboxUnavailable)
                assert "too many" in str(error)
            # All twenty arrive before the writer takes a batch: sixteen may wait.
            assert len(refused) == 20 - 16
        await asyncio.gather(*(task for task in appends if task not in refused))
        kept = [
            a.correlation_id
            for a, task in zip(arrivals, appends, strict=True)
            if task not in refused
        ]
        assert await _stored(own) == kept
    finally:
        await writer.close()
        await own.dispose()


async def test_closing_while_the_store_is_stalled_answers_every_waiting_webhook(
    shared: AsyncEngine,
) -> None:
    """The one being committed and the ones queued behind it: none is left waiting for a
    writer that has stopped (each is answered 503, and the channel delivers it again)."""
    own = create_engine(str(shared.url), durable=True, ahead_of=shared)
    writer = InboxWriter(own, max_batch=1, timeout=30)
    writer.start()
    try:
        async with shared.begin() as connection:  # the store is stalled
            await connection.execute(text("DELETE FROM inbox WHERE id < 0"))
            appends = [asyncio.create_task(writer.append(a)) for a in _arrivals(3)]
            await until(lambda: priority_pending(shared))  # the first is being committed
            started = time.monotonic()
            await writer.close(grace=0)
            outcomes = await asyncio.gather(*appends, return_exceptions=True)
            assert time.monotonic() - started < 5  # not the 30 s of the inbox timeout
        assert [type(outcome) for outcome in outcomes] == [InboxUnavailable] * 3
        assert all("stopped" in str(outcome) for outcome in outcomes)
    finally:
        await writer.close()
        await own.dispose()
