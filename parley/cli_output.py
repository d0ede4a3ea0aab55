"""How every listing command prints: a Rich table for people, or JSON with `--json` for scripts.

One place, so `parley accounts list`, `parley conversations list`, `parley usage` and the rest
agree on the JSON shape (dataclasses and pydantic models as objects, times in ISO 8601, money
as a decimal string) and on the table's look.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def plain(value: Any) -> Any:
    """`value` as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(plain(value), indent=2, default=str))


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], *, caption: str | None = None
) -> None:
    table = Table(*columns, caption=caption)
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    Console().print(table)


def when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"
