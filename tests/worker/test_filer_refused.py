"""A row the store refuses, whatever the backend's way of refusing it, is set aside for audit
and the rows around it are filed: the filer is never wedged on it (both backends)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.channels.base import ParsedWebhook
from parley.runtime import parse_webhook
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.inbox import Arrival, append
from parley.worker.filer import Filer
from tests.factories import body_bytes, whatsapp_texts
from tests.worker.test_filer import RecordingQueue, rows

# NUL for PostgreSQL, a lone surrogate for SQLite: both refuse one of them.
UNSTORABLE = "\x00\ud800"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def careless_parse(channel: str, body: bytes) -> ParsedWebhook:
    """The real parser, then text no store holds put back where a message says "poison": a
    channel that forgot to make its text storable."""
    parsed = parse_webhook(channel, body)
    messages = [
        dataclasses.replace(m, text=UNSTORABLE) if m.text == "poison" else m
        for m in parsed.messages
    ]
    return dataclasses.replace(parsed, messages=messages)


async def test_a_refused_row_is_set_aside_and_the_filer_keeps_going(engine: AsyncEngine) -> None:
    arrivals = [
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000401", ["one"])), "c-1"),
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000402", ["poison"])), "c-bad"),
        Arrival("whatsapp", body_bytes(whatsapp_texts("34600000403", ["two"])), "c-2"),
    ]
    async with engine.begin() as connection:
        await append(connection, arrivals)
    sessions = create_sessionmaker(engine)
    filer = Filer(
        sessions=sessions,
        queue=RecordingQueue(),  # type: ignore[arg-type]
        parse=careless_parse,
        accounts=AccountDirectory(sessions, None, ttl=0),
        batch=10,
        poll_interval=0.05,
    )

    assert await filer.file_batch() == 3
    assert await rows(engine, "SELECT text FROM messages ORDER BY id") == [("one",), ("two",)]
    ((correlation_id, failed, error),) = await rows(
        engine, "SELECT correlation_id, failed_at IS NOT NULL, error FROM inbox"
    )
    assert (correlation_id, failed) == ("c-bad", True)
    assert str(error).startswith("store refused: ")
    assert await filer.file_batch() == 0  # set aside, not tried again

    later = body_bytes(whatsapp_texts("34600000404", ["three"]))
    async with engine.begin() as connection:
        await append(connection, [Arrival("whatsapp", later, "c-3")])
    assert await filer.file_batch() == 1
    assert await rows(engine, "SELECT text FROM messages ORDER BY id") == [
        ("one",),
        ("two",),
        ("three",),
    ]
