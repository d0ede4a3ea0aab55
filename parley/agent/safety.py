"""What customer text may reach the model: cut to a length limit, card numbers taken out.

The stored message keeps the original; only what goes upstream is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CARD_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
CARD_MASK = "[card number removed]"
TRUNCATED = " [message cut: too long]"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one customer (or API caller) may send, and what of it reaches the model."""

    messages_per_minute: int = 20
    max_input_chars: int = 4000
    redact_cards: bool = True
    moderation: bool = False


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def redact_cards(text: str) -> str:
    """Payment card numbers (13 to 19 digits, spaces or dashes allowed, Luhn-valid) masked, so
    they are never sent to the model; order numbers and phone numbers fail the Luhn check or
    the length and stay."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return CARD_MASK if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()

    return CARD_CANDIDATE.sub(mask, text)


def limit_length(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rstrip() + TRUNCATED


def prepare_input(text: str, *, max_chars: int, redact: bool) -> str:
    """The customer's text as the model gets it."""
    text = limit_length(text, max_chars)
    return redact_cards(text) if redact else text
