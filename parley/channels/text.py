"""Channel-independent text shaping: split an answer within a channel's length limit, counted
in whatever unit the channel counts (characters, UTF-8 bytes, …); and make text the store can
hold (`storable`), at every door, before it reaches the store."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import orjson

__all__ = [
    "CHARACTERS",
    "REPLACEMENT",
    "UTF8_BYTES",
    "Measure",
    "split_text",
    "storable",
    "storable_json",
    "storable_tree",
]

REPLACEMENT = "\ufffd"
"""What stands in for a character the store cannot hold: U+FFFD, the Unicode replacement."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Where, in a JSON body, a NUL or a lone surrogate can come from: an escape of either (of any
# surrogate: a pair is harmless, but telling it apart is the walk's job), or bytes that
# decode to a surrogate (`json.loads` decodes bytes with "surrogatepass"), which start with
# 0xED. A raw NUL is not valid JSON. Conservative: anything matched is walked.
_MAYBE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed")


def storable(text: str) -> str:
    """`text` with what neither store can hold replaced by U+FFFD: NUL (PostgreSQL refuses it
    in text and JSON) and lone surrogates (not encodable as UTF-8: SQLite's driver refuses
    them). JSON's ``\\u0000`` and ``\\ud800`` escapes parse into exactly these.

    Replaced rather than removed, so that two ids differing only by a NUL stay apart, and a
    reader sees that something was there. Cheap when there is nothing to do (the usual case):
    one scan for NUL, one for non-ASCII, an encode only for non-ASCII text.
    """
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(REPLACEMENT, text)
    return text


def storable_json(body: bytes) -> object:
    """`body` parsed as JSON (`json.loads`, whose errors it raises), every string in it
    `storable`. A body without an escape or bytes that could make an unstorable character is
    not walked: the usual webhook, whose walk cost more than its parse.

    orjson parses first, at a fraction of the standard library's cost; what it refuses and
    the standard library reads (a lone surrogate escape, another encoding than UTF-8, NaN,
    an integer past 64 bits) is read by the standard library."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = json.loads(body)
    if _MAYBE_UNSTORABLE.search(body) is None:
        return value
    return storable_tree(value)


def storable_tree(value: object) -> object:
    """`value` (what a JSON parser returns) with every string in it, keys too, `storable`.

    Dicts and lists are changed in place, walked without recursion: a body nested as deep as
    the parser allows must not fail here.
    """
    if isinstance(value, str):
        return storable(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(isinstance(key, str) and storable(key) is not key for key in node):
                items = [(storable(k) if isinstance(k, str) else k, v) for k, v in node.items()]
                node.clear()
                node.update(items)
            for key, item in node.items():
                if isinstance(item, str):
                    node[key] = storable(item)
                elif isinstance(item, (dict, list)):
                    stack.append(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = storable(item)
                elif isinstance(item, (dict, list)):
                    stack.append(item)
    return value


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

# Coarsest first: a part should end where a reader expects a pause. Each pattern matches the
# whitespace a part may end before; that whitespace is dropped at the cut, nothing else.
_BOUNDARIES = (
    re.compile(r"\n[^\S\n]*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines: list items, addresses
    re.compile(r"(?<=[.!?…。！？:;])\s+"),  # sentences (and clauses ending a list's lead-in)
    re.compile(r"\s+"),  # words
)

_ZWJ = "\u200d"


def split_text(text: str, limit: int, measure: Measure = CHARACTERS) -> list[str]:
    """`text` in order as parts of at most `limit` (in `measure`'s unit), none empty, none
    starting or ending with whitespace.

    Each part is as long as it can be and ends at the coarsest boundary that fits: a paragraph,
    else a line, else a sentence, else a word. Only a word longer than `limit` is cut inside,
    between characters and, where the part has room for it, between graphemes (an emoji with
    its skin tone or ZWJ family, a letter with its accents). Joining the parts with the
    whitespace removed between them gives back `text` without its surrounding whitespace.
    """
    if limit < measure.widest:
        # A character that could not fit anywhere would stall the cut.
        raise ValueError(f"limit must be at least {measure.widest} {measure.unit}")
    parts: list[str] = []
    rest = text.strip()
    while rest:
        cut = _cut(rest, limit, measure.size)
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return parts


_Size = Callable[[str], int]


def _cut(text: str, limit: int, size: _Size) -> int:
    """Where the first part of `text` (which starts with no whitespace) ends."""
    end = _longest_fit(text, limit, size)
    if end == len(text):
        return end
    for boundary in _BOUNDARIES:
        # A boundary right at `end` counts: the part before it fits whole.
        last = None
        for match in boundary.finditer(text, 0, min(len(text), end + 2)):
            if 0 < match.start() <= end:
                last = match.start()
        if last is not None:
            return last
    return _grapheme_start(text, end)


def _longest_fit(text: str, limit: int, size: _Size) -> int:
    """The end of the longest prefix of `text` within `limit`: at least one character, since
    `limit` is at least the widest character."""
    # Every character counts at least 1, so no more than `limit` of them can fit.
    high = min(len(text), limit)
    if size(text[:high]) <= limit:
        return high
    low = 1  # fits; `high` does not
    while high - low > 1:
        middle = (low + high) // 2
        if size(text[:middle]) <= limit:
            low = middle
        else:
            high = middle
    return low


def _grapheme_start(text: str, end: int) -> int:
    """`end`, moved back to the start of the grapheme it falls in, unless that grapheme fills
    the whole part (then it is cut, as nothing else would fit)."""
    cut = end
    while cut > 0 and _continues(text, cut):
        cut -= 1
    return cut if cut > 0 else end


def _continues(text: str, index: int) -> bool:
    """Whether `text[index]` belongs to the grapheme of the character before it."""
    char, before = text[index], text[index - 1]
    code = ord(char)
    if char == _ZWJ or before == _ZWJ or unicodedata.category(char) in ("Mn", "Mc", "Me"):
        return True
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE01EF:
        return True  # variation selectors, skin tones, tag sequences (flags of regions)
    if before == "\r" and char == "\n":
        return True
    if _regional(char) and _regional(before):
        # Flags are pairs of regional indicators: an odd run before this one opens a pair.
        run = 0
        while index - run - 1 >= 0 and _regional(text[index - run - 1]):
            run += 1
        return run % 2 == 1
    return False


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF
