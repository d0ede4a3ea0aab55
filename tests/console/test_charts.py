"""The console's SVG charts, read back as XML: what a browser and a screen reader are given."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.console.charts import compact_number, daily_chart, pivot

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def segments(svg: ET.Element) -> list[ET.Element]:
    return [rect for rect in svg.iter(f"{SVG}rect") if "data-day" in rect.attrib]


def viewbox(svg: ET.Element) -> tuple[float, float]:
    _, _, width, height = map(float, svg.attrib["viewBox"].split())
    return width, height


def test_segments_are_proportional_and_stacked_in_order() -> None:
    svg = parse(
        daily_chart(
            title="Tokens",
            days=DAYS,
            series={"gpt-big": [400, 0, 100], "gpt-small": [200, 50, 100]},
            unit="tokens",
        )
    )
    rects = {(r.get("data-day"), r.get("data-series")): r for r in segments(svg)}
    assert len(rects) == 6
    big, small = rects[("2026-11-01", "gpt-big")], rects[("2026-11-01", "gpt-small")]
    assert float(big.attrib["height"]) == pytest.approx(2 * float(small.attrib["height"]), abs=0.02)
    # The first series sits at the bottom; the second starts where it ends.
    assert float(small.attrib["y"]) + float(small.attrib["height"]) == pytest.approx(
        float(big.attrib["y"]), abs=0.02
    )
    assert float(rects[("2026-11-02", "gpt-big")].attrib["height"]) == 0
    assert big.get("fill") != small.get("fill")
    assert big.get("data-value") == "400"
    tip = big.find(f"{SVG}title")
    assert tip is not None and tip.text == "2026-11-01 · gpt-big: 400 tokens"
    labelled = svg.attrib["aria-labelledby"].split()
    assert svg.get("role") == "img"
    assert [svg.find(f".//*[@id='{ident}']").tag for ident in labelled] == [  # type: ignore[union-attr]
        f"{SVG}title",
        f"{SVG}desc",
    ]
    assert svg.findtext(f"{SVG}desc") == (
        "850 tokens in total over 3 days; the busiest was 2026-11-01 with 600 tokens."
    )


def test_decimals_keep_their_exact_value_and_go_through_describe() -> None:
    svg = parse(
        daily_chart(
            title="Cost",
            days=DAYS[:1],
            series={"acme": [Decimal("0.0042")]},
            unit="USD",
            describe=lambda v: f"${v:.4f}",
        )
    )
    (rect,) = segments(svg)
    assert rect.get("data-value") == "0.0042"
    assert rect.findtext(f"{SVG}title") == "2026-11-01 · acme: $0.0042 USD"
    assert svg.findtext(f"{SVG}desc") == (
        "$0.0042 USD in total over 1 day; the busiest was 2026-11-01 with $0.0042 USD."
    )


def test_a_hostile_series_name_stays_text() -> None:
    name = '<script>alert("x")</script> & "quotes"'
    markup = daily_chart(title="<b>Tokens</b>", days=DAYS[:1], series={name: [5]}, unit="<u>")
    assert "<script>" not in markup and "<b>" not in markup
    svg = parse(markup)
    (rect,) = segments(svg)
    assert rect.get("data-series") == name
    assert rect.findtext(f"{SVG}title") == f"2026-11-01 · {name}: 5 <u>"
    assert svg.findtext(f"{SVG}title") == "<b>Tokens</b>"
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "legend"] == [
        name[:25] + "…"
    ]


@pytest.mark.parametrize(
    ("days", "series"),
    [([], {}), (DAYS, {}), (DAYS, {"idle": [0, 0, 0]})],
)
def test_no_usage_says_so(days: list[date], series: dict[str, list[float]]) -> None:
    svg = parse(daily_chart(title="Tokens", days=days, series=series, unit="tokens"))
    assert segments(svg) == []
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["No usage in this period"]


def test_values_must_match_the_days_and_not_be_negative() -> None:
    with pytest.raises(ValueError, match="2 values for 3 days"):
        daily_chart(title="T", days=DAYS, series={"a": [1, 2]}, unit="u")
    with pytest.raises(ValueError, match="negative"):
        daily_chart(title="T", days=DAYS, series={"a": [1, -2, 3]}, unit="u")


@pytest.mark.parametrize("top", [0.3, 1, 7, 9.99, 42, 100, 101, 999, 12_345, 0.0042])
def test_ticks_are_nice(top: float) -> None:
    svg = parse(daily_chart(title="T", days=DAYS[:1], series={"a": [top]}, unit="u", axis=repr))
    ticks = [
        float((t.text or "").replace(",", ""))
        for t in svg.iter(f"{SVG}text")
        if t.get("class") == "tick"
    ]
    assert 3 <= len(ticks) <= 5
    assert ticks[0] == 0 and ticks[-1] >= top
    step = ticks[1]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 5)
    assert ticks == pytest.approx([i * step for i in range(len(ticks))])


@pytest.mark.parametrize(
    ("value", "label"),
    [(0, "0"), (950, "950"), (1_200, "1.2k"), (3_000_000, "3M"), (0.0004, "0.0004")],
)
def test_axis_labels_are_short_enough_for_the_margin(value: float, label: str) -> None:
    assert compact_number(value) == label


def test_one_days_bar_is_a_bar_not_a_wall() -> None:
    svg = parse(daily_chart(title="T", days=DAYS[:1], series={"a": [5]}, unit="u"))
    (bar,) = [r for r in svg.iter(f"{SVG}rect") if r.get("data-day")]
    assert float(bar.get("width") or "inf") <= 40


def test_day_labels_thin_out() -> None:
    def labels(n: int) -> list[str]:
        days = [date(2026, 9, 1) + timedelta(days=i) for i in range(n)]
        svg = parse(daily_chart(title="T", days=days, series={"a": [1] * n}, unit="u"))
        return [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "day"]

    assert labels(7) == ["1 Sep", "2 Sep", "3 Sep", "4 Sep", "5 Sep", "6 Sep", "7 Sep"]
    ninety = labels(90)
    assert 5 <= len(ninety) <= 10
    assert ninety[:2] == ["1 Sep", "10 Sep"]


@dataclass(frozen=True)
class Usage:
    day: date
    model: str
    tokens: int


def test_pivot_fills_gaps_and_puts_the_biggest_first() -> None:
    rows = [
        Usage(date(2026, 11, 4), "small", 10),
        Usage(date(2026, 11, 1), "big", 100),
        Usage(date(2026, 11, 1), "small", 5),
        Usage(date(2026, 11, 1), "small", 5),
        Usage(date(2026, 11, 3), "big", 1),
    ]
    days, series = pivot(rows, by="model", metric="tokens")
    assert days == [date(2026, 11, d) for d in (1, 2, 3, 4)]
    assert list(series) == ["big", "small"]
    assert series == {"big": [100.0, 0.0, 1.0, 0.0], "small": [10.0, 0.0, 0.0, 10.0]}
    assert pivot([], by="model", metric="tokens") == ([], {})


# Characters XML allows: the test parses the SVG as XML, while browsers read it as HTML.
_NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)
_VALUES = st.one_of(
    st.integers(0, 10**9),
    st.floats(0, 1e9, allow_nan=False),
    st.decimals(0, 10**6, places=4, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 40), names=st.lists(_NAMES, max_size=9))
def test_every_value_drawn_once_inside_the_view(
    data: st.DataObject, n: int, names: list[str]
) -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(n)]
    series = {
        name: data.draw(st.lists(_VALUES, min_size=n, max_size=n)) for name in dict.fromkeys(names)
    }
    svg = parse(daily_chart(title="T", days=days, series=series, unit="u"))
    rects = segments(svg)
    if sum(float(v) for values in series.values() for v in values) == 0:
        assert rects == []
        return
    drawn = sorted(
        (r.attrib["data-series"], r.attrib["data-day"], r.attrib["data-value"]) for r in rects
    )
    given_ = sorted(
        (name, day.isoformat(), str(v))
        for name, values in series.items()
        for day, v in zip(days, values, strict=True)
    )
    assert drawn == given_
    width, height = viewbox(svg)
    for rect in svg.iter(f"{SVG}rect"):
        x, y, w, h = (float(rect.attrib[k]) for k in ("x", "y", "width", "height"))
        assert w >= 0 and h >= 0
        assert x >= 0 and x + w <= width + 0.01
        assert y >= 0 and y + h <= height + 0.01
    for text in svg.iter(f"{SVG}text"):
        assert 0 <= float(text.attrib["x"]) <= width and 0 <= float(text.attrib["y"]) <= height
