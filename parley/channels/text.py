"""Channel-independent text shaping: split an answer within a channel's length limit, counted
in whatever unit the channel counts (characters, UTF-8 bytes, …)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHARACTERS", "UTF8_BYTES", "Measure", "split_text"]


@dataclass(frozen=True, slots=True)
class Measure:
    """How a channel counts a text against its limit.

    `size` must add up over concatenation (the size of ``a + b`` is the sizes of ``a`` and ``b``
    summed) and count every character at least 1 and at most `widest`: the splitter relies on
    both to pack pieces without re-measuring and to cut a long word without overshooting.
    """

    unit: str
    size: Callable[[str], int]
    widest: int


def _utf8_size(text: str) -> int:
    return len(text.encode())


CHARACTERS = Measure("characters", len, 1)
UTF8_BYTES = Measure("bytes", _utf8_size, 4)

# Coarsest first: a chunk should break where a reader expects a pause. Each pattern captures
# its separator so packed pieces are rejoined with the whitespace they had.
_BOUNDARIES = (
    re.compile(r"(\n\s*\n)"),  # paragraphs
    re.compile(r"(\n)"),  # lines: list items, addresses
    re.compile(r"(?<=[.!?…。！？])(\s+)"),  # sentences
    re.compile(r"(\s+)"),  # words
)


def split_text(text: str, limit: int, measure: Measure = CHARACTERS) -> list[str]:
    """`text` in order as chunks of at most `limit` (in `measure`'s unit), none empty, none
    padded.

    Breaks at paragraphs, else lines, else sentence ends, else whitespace; only a single word
    longer than `limit` is cut mid-word, and never inside a character.
    """
    if limit < measure.widest:
        # A character that could not fit anywhere would stall the cut.
        raise ValueError(f"limit must be at least {measure.widest} {measure.unit}")
    return _split(text.strip(), limit, 0, measure.size)


_Size = Callable[[str], int]


def _split(text: str, limit: int, level: int, size: _Size) -> list[str]:
    if size(text) <= limit:
        return [text] if text else []
    if level == len(_BOUNDARIES):
        return _hard_cut(text, limit, size)
    parts = _BOUNDARIES[level].split(text)
    if len(parts) == 1:
        return _split(text, limit, level + 1, size)
    return _pack(parts, limit, level, size)


def _pack(parts: list[str], limit: int, level: int, size: _Size) -> list[str]:
    """Greedily join pieces (with their original separators) while they fit."""
    chunks: list[str] = []
    current, current_size = "", 0
    for index in range(0, len(parts), 2):
        piece = parts[index].strip()
        separator = parts[index - 1] if index else ""
        if not piece:
            continue
        piece_size = size(piece)
        joined_size = current_size + size(separator) + piece_size
        if current and joined_size <= limit:
            current, current_size = current + separator + piece, joined_size
            continue
        if current:
            chunks.append(current)
            current, current_size = "", 0
        if piece_size <= limit:
            current, current_size = piece, piece_size
        else:
            chunks.extend(_split(piece, limit, level + 1, size))
    if current:
        chunks.append(current)
    return chunks


def _hard_cut(text: str, limit: int, size: _Size) -> list[str]:
    pieces = []
    start = 0
    while start < len(text):
        end = _longest_fit(text, start, limit, size)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    return pieces


def _longest_fit(text: str, start: int, limit: int, size: _Size) -> int:
    """The end of the longest slice from `start` within `limit`: at least one character, since
    `limit` is at least the widest character."""
    # Every character counts at least 1, so no more than `limit` of them can fit.
    high = min(len(text), start + limit)
    if size(text[start:high]) <= limit:
        return high
    low = start + 1  # fits; `high` does not
    while high - low > 1:
        middle = (low + high) // 2
        if size(text[start:middle]) <= limit:
            low = middle
        else:
            high = middle
    return low
