"""The double-send window: between the Graph API accepting a reply and the commit that
records it, the sender awaits nothing but that commit. Watched from the inside, with
SQLAlchemy's engine and pool events, against the simulator's record of each send."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.pool import Pool

from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import BACKENDS, Parley
from tests.factories import body_bytes, signed_headers, whatsapp_texts

CUSTOMERS = 24


@dataclass(frozen=True)
class Seen:
    """One thing a database connection did, at `at` (time.time(), the simulator's clock)."""

    at: float
    kind: str  # "checkout" or "statement"
    connection: int  # id() of the DBAPI connection
    sql: str = ""
    parameters: str = ""


class Watch:
    """Every checkout and statement of every engine, from whichever thread runs it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def checkout(self, dbapi_connection: Any, *_args: Any) -> None:
        self._add(Seen(time.time(), "checkout", id(dbapi_connection)))

    def statement(self, connection: Any, _cursor: Any, sql: str, parameters: Any, *_a: Any) -> None:
        dbapi = connection.connection.dbapi_connection
        self._add(Seen(time.time(), "statement", id(dbapi), sql, repr(parameters)))

    def _add(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def on(self, connection: int, after: float, before: float) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.connection == connection and after < s.at < before]


@pytest.fixture
def watch() -> Iterator[Watch]:
    watch = Watch()
    event.listen(Pool, "checkout", watch.checkout)
    event.listen(Engine, "before_cursor_execute", watch.statement)
    yield watch
    event.remove(Engine, "before_cursor_execute", watch.statement)
    event.remove(Pool, "checkout", watch.checkout)


async def write(parley: Parley, customer: int) -> None:
    body = body_bytes(whatsapp_texts(f"3460{customer:07d}", [f"question {customer}"]))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200


# SQLite's one connection is never held across a network call, so its record queues for it
# (docs/queue.md gives the figure); only PostgreSQL has this structure to check.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"])
async def test_after_the_graph_answer_only_the_record_statement_is_awaited(
    parley: Parley, openai_sim: OpenAISimulator, graph_sim: GraphSimulator, watch: Watch
) -> None:
    openai_sim.latency = 0.05
    graph_sim.latency = 0.1  # sends overlap, and turns run while they are in flight

    await asyncio.gather(*(write(parley, n) for n in range(CUSTOMERS)))
    await graph_sim.wait_for_sends(CUSTOMERS, timeout=30)
    await parley.wait_for_rows("SELECT count(*) FROM outbox", [(0,)], timeout=15)

    for send in graph_sim.sends:
        wamid = send.answer["messages"][0]["id"]
        records = [s for s in watch.seen if s.kind == "statement" and wamid in s.parameters]
        # One statement both deletes the outbox row and marks the message sent: in autocommit
        # it is the whole transaction, one round trip.
        assert len(records) == 1, (wamid, records)
        record = records[0]
        assert "DELETE FROM outbox" in record.sql and "UPDATE messages" in record.sql
        assert send.answered_at is not None and record.at > send.answered_at
        # The connection was taken before the request reached the Graph API, and did
        # nothing else until the record: no pool wait, no ping, no other statement.
        during = watch.on(record.connection, after=send.time, before=record.at)
        assert during == [], (wamid, during)
        taken = [
            s
            for s in watch.seen
            if s.connection == record.connection and s.kind == "checkout" and s.at < send.time
        ]
        assert taken, wamid
