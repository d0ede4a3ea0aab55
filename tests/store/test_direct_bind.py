"""`Prepared.bind`'s planned parameters against SQLAlchemy's own expansion of the same values:
the same SQL and the same converted parameters, for the hot statements' shapes (IN lists of
any length, pairs, dates, JSON, the statement's own constants), on the plans made for other
values of the same shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, insert, update

from parley.store.db import create_engine
from parley.store.direct import Prepared
from parley.store.models import MESSAGES
from parley.store.queries.outbox import _claim_head_statement
from parley.store.queries.statuses import _named_statement
from parley.store.queries.turns import _start_attempt_statement

DIALECT = create_engine("sqlite+aiosqlite:///unused.db").sync_engine.dialect
NAMED = Prepared.of(_named_statement(), DIALECT, None)
ATTEMPT = Prepared.of(_start_attempt_statement(), DIALECT, None)
CLAIM = Prepared.of(_claim_head_statement(), DIALECT, None)
STATUS = Prepared.of(
    update(MESSAGES)
    .where(MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .values(meta=bindparam("meta"), updated_at=bindparam("at")),
    DIALECT,
    None,
)
STORED = Prepared.of(
    insert(MESSAGES), DIALECT, ["conversation_id", "sequence_no", "text", "meta", "created_at"]
)

texts = st.text(max_size=8)
ids = st.lists(st.integers(min_value=1, max_value=10**6), max_size=6)
dates = st.datetimes(timezones=st.just(UTC))
metas = st.recursive(
    st.none() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


def same_as_sqlalchemy(prepared: Prepared, values: dict[str, Any]) -> None:
    """With the Python-side defaults given, as `bind` fills them (a time differs each call)."""
    given = {key: default() for key, default in prepared.defaults} | values
    assert prepared.bind(given) == prepared._expanded(given)


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.sampled_from(["whatsapp", "instagram"]), texts), max_size=5),
    channel_ids=st.sets(texts, max_size=5),
)
def test_the_status_reports_read_with_pairs_and_a_set(
    pairs: list[tuple[str, str]], channel_ids: set[str]
) -> None:
    same_as_sqlalchemy(
        NAMED,
        {
            "pairs_first": sorted({a for a, _ in pairs}),
            "pairs_second": sorted({b for _, b in pairs}),
            "pairs": sorted(pairs),
            "channel_message_ids": channel_ids,
        },
    )


@settings(max_examples=100, deadline=None)
@given(message_ids=ids, meta=metas, at=dates)
def test_in_lists_with_json_and_dates(message_ids: list[int], meta: Any, at: datetime) -> None:
    same_as_sqlalchemy(ATTEMPT, {"ids": message_ids})
    same_as_sqlalchemy(STATUS, {"ids": message_ids, "meta": meta, "at": at})


@settings(max_examples=60, deadline=None)
@given(conversation_id=st.integers(min_value=1), now=dates, hold=dates)
def test_a_parameter_named_twice_and_dates(
    conversation_id: int, now: datetime, hold: datetime
) -> None:
    same_as_sqlalchemy(
        CLAIM, {"of_conversation": conversation_id, "now_at": now, "hold_until": hold}
    )


@settings(max_examples=60, deadline=None)
@given(number=st.integers(min_value=0), text=st.none() | texts, meta=metas, at=dates)
def test_an_insert_of_given_columns(number: int, text: str | None, meta: Any, at: datetime) -> None:
    same_as_sqlalchemy(
        STORED,
        {"conversation_id": 1, "sequence_no": number, "text": text, "meta": meta, "created_at": at},
    )


def test_one_plan_serves_each_shape() -> None:
    prepared = Prepared.of(_start_attempt_statement(), DIALECT, None)
    first = prepared.bind({"ids": [1, 2]})
    second = prepared.bind({"ids": [3, 4]})
    assert first[0] == second[0] and first[1] != second[1]
    assert second[1] == (3, 4) or set(second[1]) >= {3, 4}
    prepared.bind({"ids": [5]})
    assert len(prepared.plans) == 2  # lengths 2 and 1
