"""The filer on SQLite files the channels' status reports without a session when a batch holds
nothing else, in one trip that commits; anything else in the batch, or a message changed by
another transaction while the reports were read, and the batch goes through a session, filed
the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.runtime import parse_webhook
from parley.store.db import create_sessionmaker
from parley.store.direct import DirectWrites
from parley.store.models import Message
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.inbox import Arrival, append
from parley.worker import filer as filer_module
from parley.worker.filer import Filer
from tests.factories import PHONE_NUMBER_ID, body_bytes, sample, whatsapp_texts
from tests.store.test_statuses import sent
from tests.worker.test_filer import RecordingQueue, engine, rows

__all__ = ["engine"]  # the fixture, shared with test_filer

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class CountedSessions:
    """The engine's sessions, counting how many the filer opened."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self.sessions()


def status_body(wamid: str, name: str) -> bytes:
    payload = sample(f"whatsapp/{name}.json")
    value = payload["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = PHONE_NUMBER_ID
    value["statuses"][0]["id"] = wamid
    return body_bytes(payload)


async def sent_messages(engine: AsyncEngine, *wamids: str) -> None:
    """Replies sent with these channel ids, and their outbox rows gone, as after delivery."""
    async with create_sessionmaker(engine)() as session:
        await sent(session, *wamids)
        await session.execute(text("DELETE FROM outbox"))
        await session.commit()


async def statuses(engine: AsyncEngine) -> dict[str, tuple[str, dict[str, Any]]]:
    found = await rows(
        engine, "SELECT channel_message_id, status, meta FROM messages WHERE direction = 'out'"
    )
    return {str(mid): (str(status), json.loads(str(meta))) for mid, status, meta in found}


def direct_filer(engine: AsyncEngine, sessions: CountedSessions, queue: RecordingQueue) -> Filer:
    direct = DirectWrites.of(engine, bounded=True)
    assert direct is not None and direct.ready  # the set-up's session opened the line
    return Filer(
        sessions=sessions,  # type: ignore[arg-type]
        queue=queue,  # type: ignore[arg-type]
        parse=parse_webhook,
        accounts=AccountDirectory(create_sessionmaker(engine), None, ttl=0),  # not counted
        batch=10,
        poll_interval=0.05,
        direct=direct,
    )


async def test_status_reports_alone_are_filed_without_a_session(engine: AsyncEngine) -> None:
    await sent_messages(engine, "wamid.a", "wamid.b")
    async with engine.begin() as connection:
        await append(
            connection,
            [
                Arrival("whatsapp", status_body("wamid.a", "status_delivered"), "c-1"),
                Arrival("whatsapp", status_body("wamid.b", "status_read"), "c-2"),
                Arrival("whatsapp", status_body("wamid.a", "status_sent"), "c-3"),  # late
                Arrival("whatsapp", status_body("wamid.other-tool", "status_read"), "c-4"),
            ],
        )
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()

    assert await direct_filer(engine, sessions, queue).file_batch() == 4

    assert sessions.opened == 0
    found = await statuses(engine)
    assert found["wamid.a"][0] == "delivered" and "delivered_at" in found["wamid.a"][1]
    assert found["wamid.b"][0] == "read" and "read_at" in found["wamid.b"][1]
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]
    assert queue.signalled == []


@pytest.mark.parametrize(
    "other",
    [
        lambda: body_bytes(whatsapp_texts("34600000071", ["hello"])),
        lambda: status_body("wamid.b", "status_failed_131026"),  # queues a send again
        lambda: b'{"object": "not whatsapp"}',  # unreadable: marked
    ],
    ids=["message", "failure", "unreadable"],
)
async def test_a_batch_with_anything_else_goes_through_a_session_in_order(
    engine: AsyncEngine, other: Callable[[], bytes]
) -> None:
    await sent_messages(engine, "wamid.a", "wamid.b")
    async with engine.begin() as connection:
        await append(
            connection,
            [
                Arrival("whatsapp", status_body("wamid.a", "status_delivered"), "c-1"),
                Arrival("whatsapp", other(), "c-other"),
                Arrival("whatsapp", status_body("wamid.a", "status_read"), "c-3"),
            ],
        )
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()

    assert await direct_filer(engine, sessions, queue).file_batch() == 3

    assert sessions.opened == 1
    assert (await statuses(engine))["wamid.a"][0] == "read"
    assert await rows(engine, "SELECT count(*) FROM inbox WHERE failed_at IS NULL") == [(0,)]
    texts = await rows(engine, "SELECT text FROM messages WHERE direction = 'in'")
    if b"hello" in other():
        assert ("hello",) in texts and len(queue.signalled) == 1
    elif b"131026" in other():
        assert (await statuses(engine))["wamid.b"][0] == "failed"
        assert await rows(engine, "SELECT count(*) FROM outbox") == [(1,)]
    else:
        assert await rows(engine, "SELECT count(*) FROM inbox") == [(1,)]  # kept, marked


async def test_a_message_changed_while_its_reports_were_read_is_filed_in_a_session(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sent_messages(engine, "wamid.a")
    async with engine.begin() as connection:
        await append(
            connection, [Arrival("whatsapp", status_body("wamid.a", "status_delivered"), "c-1")]
        )
    read = filer_module.advance_statuses_directly
    changed = asyncio.Event()

    async def read_then_changed(*args: Any, **kwargs: Any) -> Any:
        """The reports read, then the message written by another transaction (delivery's)."""
        outcome = await read(*args, **kwargs)
        if not changed.is_set():
            async with engine.begin() as connection:
                await connection.execute(
                    update(Message)
                    .where(Message.channel_message_id == "wamid.a")
                    .values(meta={"other": "write"})
                )
            changed.set()
        return outcome

    monkeypatch.setattr(filer_module, "advance_statuses_directly", read_then_changed)
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()

    assert await direct_filer(engine, sessions, queue).file_batch() == 1

    assert changed.is_set() and sessions.opened == 1
    status, meta = (await statuses(engine))["wamid.a"]
    assert status == "delivered"
    assert meta["other"] == "write" and "delivered_at" in meta  # neither write lost
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


async def test_after_customers_messages_reports_go_without_a_session_at_once(
    engine: AsyncEngine,
) -> None:
    """The rows are read once, before any transaction, whatever they hold: a batch of reports
    right after one of customers' messages is filed without a session."""
    await sent_messages(engine, "wamid.a")
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()
    the_filer = direct_filer(engine, sessions, queue)
    opened = []
    for body in (
        body_bytes(whatsapp_texts("34600000072", ["hello"])),
        status_body("wamid.a", "status_delivered"),
        status_body("wamid.a", "status_read"),
    ):
        async with engine.begin() as connection:
            await append(connection, [Arrival("whatsapp", body, "c")])
        assert await the_filer.file_batch() == 1
        opened.append(sessions.opened)

    assert opened == [1, 1, 1]
    assert (await statuses(engine))["wamid.a"][0] == "read"


async def test_a_known_customers_messages_are_filed_by_a_transaction_that_reads_nothing(
    engine: AsyncEngine,
) -> None:
    """The inbox rows, the accounts, which messages are stored already, the customers and
    their open conversations are read before the transaction: while it runs, every other
    writer of the file waits (the door's acknowledgements too), so for a customer already
    known it only writes."""
    await rows(engine, "SELECT 1")  # opens the line
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()
    the_filer = direct_filer(engine, sessions, queue)
    transactions: list[list[str]] = []

    def begun(_conn: Any) -> None:
        transactions.append([])

    def seen(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if transactions:
            transactions[-1].append(" ".join(sql.split()[:4]))

    # The customer's first message creates the account; the second finds it.
    for number, texts in enumerate((["hello"], ["again", "and again"])):
        body = body_bytes(whatsapp_texts("34600000073", texts))
        async with engine.begin() as connection:
            await append(connection, [Arrival("whatsapp", body, f"c-{number}")])
        transactions.clear()
        event.listen(engine.sync_engine, "begin", begun)
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        try:
            assert await the_filer.file_batch() == 1
        finally:
            event.remove(engine.sync_engine, "begin", begun)
            event.remove(engine.sync_engine, "before_cursor_execute", seen)

    (filing,) = [t for t in transactions if any("INSERT INTO messages" in sql for sql in t)]
    assert [sql for sql in filing if sql.startswith("SELECT")] == []
    assert any(sql.startswith("DELETE FROM inbox") for sql in filing)
    texts = await rows(engine, "SELECT text FROM messages WHERE direction = 'in' ORDER BY id")
    assert texts == [("hello",), ("again",), ("and again",)]
    assert await rows(engine, "SELECT count(*) FROM inbox") == [(0,)]


async def test_a_row_erased_while_it_was_read_ahead_is_not_filed(engine: AsyncEngine) -> None:
    """An erasure deletes the inbox rows that name its customer. One that does so after the
    filer read the rows and before its transaction commits must not see the customer come
    back: nothing of the transaction is kept, and the next round reads the inbox again."""
    body = body_bytes(whatsapp_texts("34600000074", ["erase me"]))
    async with engine.begin() as connection:
        await append(connection, [Arrival("whatsapp", body, "c-erased")])
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()
    the_filer = direct_filer(engine, sessions, queue)
    database = engine.url.database
    assert database is not None

    def parse_then_erase(channel: str, raw: bytes) -> Any:
        # Between the read and the transaction, as an erasure on another connection would.
        with contextlib.closing(sqlite3.connect(database)) as other, other:
            other.execute("DELETE FROM inbox")
        return parse_webhook(channel, raw)

    the_filer._parse = parse_then_erase

    assert await the_filer.file_batch() == 0

    assert await rows(engine, "SELECT count(*) FROM messages") == [(0,)]
    assert await rows(engine, "SELECT count(*) FROM contacts") == [(0,)]
    assert queue.signalled == []
    the_filer._parse = parse_webhook
    assert await the_filer.file_batch() == 0  # the inbox is empty now: nothing to file


async def test_a_conversation_closed_after_it_was_read_ahead_gets_no_message(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator may close the customer's conversation between the filer's reads and its
    transaction: the message must open a new conversation, not land in the closed one."""
    await rows(engine, "SELECT 1")  # opens the line
    sessions, queue = CountedSessions(create_sessionmaker(engine)), RecordingQueue()
    the_filer = direct_filer(engine, sessions, queue)
    database = engine.url.database
    assert database is not None
    look_up = filer_module.look_up_inbound

    async def look_up_then_close(*args: Any) -> Any:
        found = await look_up(*args)
        with contextlib.closing(sqlite3.connect(database)) as other, other:
            other.execute("UPDATE conversations SET status = 'closed'")
        return found

    async def arrives(text_: str) -> None:
        body = body_bytes(whatsapp_texts("34600000075", [text_]))
        async with engine.begin() as connection:
            await append(connection, [Arrival("whatsapp", body, text_)])

    await arrives("first")
    assert await the_filer.file_batch() == 1
    await arrives("second")
    monkeypatch.setattr(filer_module, "look_up_inbound", look_up_then_close)
    assert await the_filer.file_batch() == 0  # nothing kept: read again
    monkeypatch.setattr(filer_module, "look_up_inbound", look_up)
    assert await the_filer.file_batch() == 1

    filed = await rows(
        engine,
        "SELECT m.text, c.status FROM messages m JOIN conversations c "
        "ON c.id = m.conversation_id ORDER BY m.id",
    )
    assert filed == [("first", "closed"), ("second", "active")]
