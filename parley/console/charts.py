"""Daily usage as inline SVG: stacked bars drawn on the server, so the console needs no script.

`pivot` turns usage rows into one value per day and series; `daily_chart` draws them. Series
names come from users (account and model names), so every text and attribute is escaped. Each
bar segment carries its day, series and exact value in `data-*` attributes and a `<title>`
tooltip; the chart's `<desc>` states the total and the busiest day for screen readers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from markupsafe import Markup, escape

# Okabe–Ito: told apart with every common colour-vision deficiency. Black, its last colour, is
# left out so the chart also reads on a dark page, where text is drawn in `currentColor`.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

WIDTH = 640
LEFT, RIGHT, TOP, BOTTOM = 56, WIDTH - 8, 12, 176  # the plot area
MAX_X_LABELS = 10  # about 58 px each: "30 Nov" never touches its neighbour
LEGEND_COLUMNS, LEGEND_ROW = 3, 18
MAX_BAR = 40
LEGEND_CHARS = 26  # a longer name is cut in the legend; its bars' tooltips keep it whole


def describe_number(value: float) -> str:
    """`value` for a reader: whole numbers with thousands separators, else two decimals,
    or three significant digits below 1 (a fraction of a cent still shows)."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


def compact_number(value: float) -> str:
    """An axis label that fits the margin: 950, 1.2k, 3M, 0.0004."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def pivot(
    rows: Iterable[Any],
    *,
    by: str,
    metric: str,
    start: date | None = None,
    end: date | None = None,
) -> tuple[list[date], dict[str, list[float]]]:
    """One value per day and series from rows with a `day`, a `by` and a `metric` attribute.

    Returns every day from `start` (else the first row's) to `end` (else the last row's), days
    without rows as 0.0, and the series named `str(row.<by>)`, the largest total first, so it
    is drawn at the bottom.
    """
    sums: dict[str, dict[date, float]] = {}
    for row in rows:
        per_day = sums.setdefault(str(getattr(row, by)), {})
        per_day[row.day] = per_day.get(row.day, 0.0) + float(getattr(row, metric))
    if not sums:
        return [], {}
    first = min(min(per_day) for per_day in sums.values())
    last = max(max(per_day) for per_day in sums.values())
    first, last = min(first, start or first), max(last, end or last)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    series = {name: [per_day.get(d, 0.0) for d in days] for name, per_day in sums.items()}
    ranked = sorted(series.items(), key=lambda item: (-sum(item[1]), item[0]))
    return days, dict(ranked)


def nice_step(top: float) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that covers `top` (> 0) in at most
    four steps, so the axis shows 3 to 5 ticks counting zero."""
    step = 10.0 ** (math.floor(math.log10(top / 4)) - 1)
    while True:
        for factor in (1, 2, 5):
            # The tolerance keeps 0.3 / 0.1 = 2.9999999999999996 from costing a fourth step.
            if math.ceil(top / (step * factor) - 1e-9) <= 4:
                return step * factor
        step *= 10


def daily_chart(
    *,
    title: str,
    days: Sequence[date],
    series: Mapping[str, Sequence[float | Decimal]],
    unit: str,
    describe: Callable[[float], str] = describe_number,
    axis: Callable[[float], str] = compact_number,
) -> Markup:
    """Stacked daily bars, one colour per series, the first series at the bottom.

    Args:
        days: the x axis, one bar per day.
        series: name → one value per day (floats, ints or Decimals, none negative).
        unit: said after every value ("tokens", "USD").
        describe: formats a value for the tooltips and the summary.
        axis: formats the y axis' ticks, short enough for the left margin.
    """
    for name, values in series.items():
        if len(values) != len(days):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(days)} days")
        if any(not math.isfinite(v) or v < 0 for v in map(float, values)):
            raise ValueError(f"series {name!r} holds a negative or non-finite value")
    totals = [sum(float(values[i]) for values in series.values()) for i in range(len(days))]
    # Derived from the content, so the same chart renders the same bytes, and two charts on one
    # page do not share the ids their `aria-labelledby` points at.
    key = hashlib.sha1(
        repr((title, list(days), dict(series))).encode(), usedforsecurity=False
    ).hexdigest()[:10]
    ident = f"chart-{key}"
    if not days or not series or sum(totals) == 0:
        return _svg(ident, title, "No usage in this period.", 40, [_empty_note()])
    step = nice_step(max(totals))
    top = max(step * math.ceil(max(totals) / step - 1e-9), max(totals))
    busiest = max(range(len(days)), key=lambda i: totals[i])
    span = f"{len(days)} days" if len(days) > 1 else "1 day"
    summary = (
        f"{describe(sum(totals))} {unit} in total over {span}; the busiest was "
        f"{days[busiest].isoformat()} with {describe(totals[busiest])} {unit}."
    )
    legend_rows = math.ceil(len(series) / LEGEND_COLUMNS)
    parts = [
        *_axis(step, top, axis),
        *_bars(days, series, top, unit, describe),
        *_x_labels(days),
        *_legend(list(series)),
    ]
    return _svg(ident, title, summary, BOTTOM + 36 + legend_rows * LEGEND_ROW, parts)


def _svg(ident: str, title: str, summary: str, height: int, parts: list[str]) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}"'
        f' width="100%" role="img" aria-labelledby="{ident}-title {ident}-desc"'
        ' font-size="11" fill="currentColor">'
        f'<title id="{ident}-title">{escape(title)}</title>'
        f'<desc id="{ident}-desc">{escape(summary)}</desc>{"".join(parts)}</svg>'
    )


def _empty_note() -> str:
    return f'<text x="{WIDTH / 2}" y="24" text-anchor="middle">No usage in this period</text>'


def _axis(step: float, top: float, label: Callable[[float], str]) -> list[str]:
    # Rounded to the step's decimals, so the third tick reads 0.3, not 0.30000000000000004.
    decimals = max(0, -math.floor(math.log10(step)))
    parts = []
    for i in range(math.floor(top / step + 1e-9) + 1):
        tick = round(i * step, decimals)
        y = _y(tick, top)
        parts.append(
            f'<line x1="{LEFT}" x2="{RIGHT}" y1="{y:.2f}" y2="{y:.2f}" stroke="currentColor"'
            ' stroke-opacity="0.15"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end">'
            f"{escape(label(tick))}</text>"
        )
    return parts


def _bars(
    days: Sequence[date],
    series: Mapping[str, Sequence[float | Decimal]],
    top: float,
    unit: str,
    describe: Callable[[float], str],
) -> list[str]:
    slot = (RIGHT - LEFT) / len(days)
    width = min(slot * 0.8, MAX_BAR)  # one day's bar is a bar, not a wall
    parts = []
    for i, day in enumerate(days):
        x = LEFT + slot * (i + 0.5) - width / 2
        below = 0.0
        for colour, (name, values) in zip(_colours(), series.items(), strict=False):
            value = float(values[i])
            y, height = _y(below + value, top), _y(below, top) - _y(below + value, top)
            below += value
            tip = f"{day.isoformat()} · {name}: {describe(value)} {unit}"
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{width:.2f}"'
                f' height="{height:.2f}" fill="{colour}" data-day="{day.isoformat()}"'
                f' data-series="{escape(name)}" data-value="{escape(str(values[i]))}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    return parts


def _x_labels(days: Sequence[date]) -> list[str]:
    every = math.ceil(len(days) / MAX_X_LABELS)
    slot = (RIGHT - LEFT) / len(days)
    return [
        f'<text class="day" x="{LEFT + slot * (i + 0.5):.2f}" y="{BOTTOM + 16}"'
        f' text-anchor="middle">{day.day} {_MONTHS[day.month - 1]}</text>'
        for i, day in enumerate(days)
        if i % every == 0
    ]


def _legend(names: list[str]) -> list[str]:
    column = (RIGHT - LEFT) / LEGEND_COLUMNS
    parts = []
    for i, (colour, name) in enumerate(zip(_colours(), names, strict=False)):
        x = LEFT + column * (i % LEGEND_COLUMNS)
        y = BOTTOM + 30 + LEGEND_ROW * (i // LEGEND_COLUMNS)
        shown = name if len(name) <= LEGEND_CHARS else name[: LEGEND_CHARS - 1] + "…"
        parts.append(
            f'<rect class="key" x="{x:.2f}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{x + 14:.2f}" y="{y}">{escape(shown)}</text>'
        )
    return parts


def _colours() -> Iterable[str]:
    """The palette, repeated past seven series: a repeat beats an unreadable shade."""
    while True:
        yield from PALETTE


def _y(value: float, top: float) -> float:
    return BOTTOM - value / top * (BOTTOM - TOP)
