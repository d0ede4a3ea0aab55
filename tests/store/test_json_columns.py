"""JSON columns are written by orjson and read back whole, on both backends, including what
orjson alone refuses (those values go through the standard library, as before)."""

from __future__ import annotations

import json
import math

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.db import json_text, json_value
from parley.store.models import Message
from parley.store.queries.inbound import record_inbound
from tests.factories import inbound_text


def test_what_orjson_refuses_is_written_as_before() -> None:
    for value in ({"big": 2**70}, {1: "an integer key"}, {"text": "a lone \ud800 surrogate"}):
        assert json_text(value) == json.dumps(value)
    assert json.loads(json_text({"text": "café ✓", "n": [1, 2.5, None]})) == {
        "text": "café ✓",
        "n": [1, 2.5, None],
    }


def test_text_json_dumps_wrote_reads_back() -> None:
    assert math.isnan(json_value('{"x": NaN}')["x"])  # json.dumps writes NaN; orjson refuses it
    assert json_value(b'{"a": [1, "b"]}') == {"a": [1, "b"]}


async def test_json_columns_round_trip(session: AsyncSession) -> None:
    await record_inbound(
        session, messages=[inbound_text("wamid.j", phone="34600")], correlation_id="c"
    )
    meta = {"big": 2**70, "text": "café ✓", "nested": {"list": [1, 2.5, None, True]}}
    await session.execute(update(Message).values(meta=meta))
    await session.commit()
    session.expire_all()
    assert await session.scalar(select(Message.meta)) == meta
