"""Looking rows up by a pair of columns (an account and a channel's id), from an index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, tuple_
from sqlalchemy.orm import QueryableAttribute


def pair_in(
    first: QueryableAttribute[Any],
    second: QueryableAttribute[Any],
    pairs: Iterable[tuple[Any, Any]],
) -> ColumnElement[bool]:
    """`(first, second) IN pairs`, in a form both engines answer from an index on the pair.

    SQLite answers a row value IN a list by scanning the whole table, whatever the indexes
    (its plan: `SCAN messages`): a status webhook read every message ever stored. Each
    column's own IN leads, which SQLite and PostgreSQL look up in the pair's index; the row
    value IN then drops the combinations of the two lists that are not among `pairs`.
    """
    pairs = sorted(pairs)
    return and_(
        first.in_(sorted({a for a, _ in pairs})),
        second.in_(sorted({b for _, b in pairs})),
        tuple_(first, second).in_(pairs),
    )
