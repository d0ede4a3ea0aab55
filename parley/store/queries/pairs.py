"""Looking rows up by a pair of columns (an account and a channel's id), from an index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, tuple_
from sqlalchemy.orm import QueryableAttribute


def pair_in(
    first: QueryableAttribute[Any] | ColumnElement[Any],
    second: QueryableAttribute[Any] | ColumnElement[Any],
    name: str = "pairs",
) -> ColumnElement[bool]:
    """`(first, second) IN :name`, in a form both engines answer from an index on the pair;
    the pairs are given at each execution (`pair_params`), so that a statement using it is
    built once: building one costs ~200 µs, several times what SQLite takes to answer it.

    SQLite answers a row value IN a list by scanning the whole table, whatever the indexes
    (its plan: `SCAN messages`): a status webhook read every message ever stored. Each
    column's own IN leads, which SQLite and PostgreSQL look up in the pair's index; the row
    value IN then drops the combinations of the two lists that are not among the pairs.
    """
    return and_(
        first.in_(bindparam(f"{name}_first", expanding=True)),
        second.in_(bindparam(f"{name}_second", expanding=True)),
        tuple_(first, second).in_(bindparam(name, expanding=True)),
    )


def pair_params(pairs: Iterable[tuple[Any, Any]], name: str = "pairs") -> dict[str, list[Any]]:
    """The parameters of `pair_in(…, name)` for `pairs`."""
    ordered = sorted(pairs)
    return {
        f"{name}_first": sorted({a for a, _ in ordered}),
        f"{name}_second": sorted({b for _, b in ordered}),
        name: ordered,
    }
