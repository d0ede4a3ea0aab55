"""What a turn cost: tokens times the model's price, from a table the operator can override.

Prices are USD per million tokens. The defaults are OpenAI's list prices as published for
these models; set `PARLEY_PRICES` for other models, other servers or new prices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from parley.agent.llm import Usage
from parley.errors import ConfigurationError
from parley.store.queries.usage import UsageAdd

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    cached_input: Decimal
    output: Decimal


def _price(input_: str, cached: str, output: str) -> Price:
    return Price(Decimal(input_), Decimal(cached), Decimal(output))


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": _price("1.25", "0.125", "10"),
    "gpt-5-mini": _price("0.25", "0.025", "2"),
    "gpt-5-nano": _price("0.05", "0.005", "0.4"),
    "gpt-4.1": _price("2", "0.5", "8"),
    "gpt-4.1-mini": _price("0.4", "0.1", "1.6"),
    "gpt-4.1-nano": _price("0.1", "0.025", "0.4"),
    "gpt-4o": _price("2.5", "1.25", "10"),
    "gpt-4o-mini": _price("0.15", "0.075", "0.6"),
}


def load_prices(setting: str | None) -> dict[str, Price]:
    """The defaults, overridden by `PARLEY_PRICES`: JSON text or `@path` to a JSON file of
    ``{"model": {"input": 0.25, "cached_input": 0.025, "output": 2.0}}``."""
    prices = dict(DEFAULT_PRICES)
    if not setting:
        return prices
    text = Path(setting[1:]).read_text(encoding="utf-8") if setting.startswith("@") else setting
    try:
        table = json.loads(text)
        for model, entry in table.items():
            prices[model] = Price(
                Decimal(str(entry["input"])),
                Decimal(str(entry.get("cached_input", entry["input"]))),
                Decimal(str(entry["output"])),
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"PARLEY_PRICES is not a price table: {exc}") from exc
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The model's price; a dated snapshot (``gpt-5-mini-2025-08-07``) costs as its family."""
    if model in prices:
        return prices[model]
    family = [name for name in prices if model.startswith(f"{name}-")]
    return prices[max(family, key=len)] if family else None


def turn_cost(model: str, usage: Usage, prices: dict[str, Price]) -> Decimal | None:
    """USD for one call, or None when the model has no price (stored as unknown, not 0).
    Cached input tokens are part of the input tokens; reasoning tokens of the output."""
    price = price_for(model, prices)
    if price is None:
        return None
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    total = (
        fresh * price.input
        + usage.cached_tokens * price.cached_input
        + usage.output_tokens * price.output
    )
    return (total / MILLION).quantize(Decimal("0.00000001"))


def priced_usage(model: str, usage: Usage, prices: dict[str, Price]) -> UsageAdd:
    """A turn's usage with its cost, as the usage sums take it."""
    return UsageAdd(
        model=model,
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=turn_cost(model, usage, prices),
    )
