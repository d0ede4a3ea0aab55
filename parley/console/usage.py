"""The usage page: agent messages, tokens and cost per UTC day as charts split by account and
by model, and the prompt versions' A/B report. A plain user sees their own account only, and
no report (it spans every account)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from parley.console import charts
from parley.console.render import page
from parley.console.viewer import ViewerDep
from parley.deps import SessionDep
from parley.store.queries.accounts import list_accounts
from parley.store.queries.prompt_report import prompt_report
from parley.store.queries.usage import daily_usage

router = APIRouter(prefix="/console", include_in_schema=False)

DAYS = 30


@dataclass(frozen=True, slots=True)
class UsagePoint:
    """One usage row as the charts read it: the account by its name, numbers as floats."""

    day: date
    account: str
    model: str
    messages: float
    tokens: float
    cost: float


def _tokens(value: float) -> str:
    return f"{value:,.0f} tokens"


def _messages(value: float) -> str:
    return f"{value:,.0f} messages"


def _dollars(value: float) -> str:
    return f"${value:,.4f}"


def _dollar_ticks(value: float) -> str:
    return "$" + charts.compact_number(value)


METRICS = (
    ("messages", "Agent messages", "messages", _messages, charts.compact_number),
    ("tokens", "Tokens (input + output)", "tokens", _tokens, charts.compact_number),
    ("cost", "Cost", "USD", _dollars, _dollar_ticks),
)


def _charts(points: list[UsagePoint], since: date, until: date) -> list[tuple[str, Markup]]:
    """One chart per metric and split, in the order the page shows them, over the whole
    period (days without usage are empty, not left out)."""
    drawn = []
    for split, label in (("account", "account"), ("model", "model")):
        for metric, title, unit, describe, axis in METRICS:
            days, series = charts.pivot(points, by=split, metric=metric, start=since, end=until)
            heading = f"{title} per day, by {label}"
            drawn.append(
                (
                    heading,
                    charts.daily_chart(
                        title=heading,
                        days=days,
                        series=series,
                        unit=unit,
                        describe=describe,
                        axis=axis,
                    ),
                )
            )
    return drawn


@router.get("/usage")
async def usage(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    today = datetime.now(UTC).date()
    since = today - timedelta(days=DAYS - 1)
    if viewer.is_admin:
        rows = await daily_usage(session, since=since)
    elif viewer.account_id is not None:
        rows = await daily_usage(session, since=since, account_id=viewer.account_id)
    else:
        rows = []
    names = await _account_names(session)
    points = [
        UsagePoint(
            day=row.day,
            account=names.get(row.account_id, f"account {row.account_id}"),
            model=row.model,
            messages=float(row.requests),
            tokens=float(row.input_tokens + row.output_tokens),
            cost=float(row.cost_usd),
        )
        for row in rows
    ]
    context: dict[str, Any] = {
        "viewer": viewer,
        "since": since,
        "charts": _charts(points, since, today) if points else [],
        "totals": _totals(rows),
        "report": await prompt_report(session) if viewer.is_admin else None,
    }
    return page(request, "usage.html", context)


def _totals(rows: list[Any]) -> dict[str, Any]:
    return {
        "messages": sum(r.requests for r in rows),
        "tokens": sum(r.input_tokens + r.output_tokens for r in rows),
        "cost": sum((r.cost_usd for r in rows), Decimal(0)),
    }


async def _account_names(session: SessionDep) -> dict[int, str]:
    accounts = await list_accounts(session, include_removed=True, include_unconfigured=True)
    return {a.id: f"{a.channel} {a.name or a.external_id}" for a in accounts}
