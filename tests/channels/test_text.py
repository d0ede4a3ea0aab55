"""split_text: within a limit in characters or UTF-8 bytes, at natural boundaries."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.channels.text import CHARACTERS, UTF8_BYTES, Measure, split_text


def assert_well_formed(chunks: list[str], limit: int) -> None:
    assert chunks
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk == chunk.strip()


def random_prose(seed: int, words: int) -> str:
    rng = random.Random(seed)
    vocabulary = ["order", "delivery", "café", "naïve", "über", "日本語", "🙂", "refund", "a"]
    out: list[str] = []
    for index in range(words):
        word = rng.choice(vocabulary)
        if index % 11 == 10:
            word += rng.choice([".", "!", "?"])
        out.append(word)
        if index % 60 == 59:
            out.append("\n\n")
        elif index % 23 == 22:
            out.append("\n")
    return " ".join(out)


# --- split_text ----------------------------------------------------------------------------


def test_short_text_is_one_stripped_chunk() -> None:
    assert split_text("  hello there \n", 4096) == ["hello there"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, 10) == []


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_text("x", 0)


def test_ten_thousand_characters_at_whatsapp_limit() -> None:
    text = random_prose(1, 2500)
    assert len(text) > 10_000
    chunks = split_text(text, 4096)
    assert_well_formed(chunks, 4096)
    assert len(chunks) >= 3
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize("limit", [10, 17, 40, 100, 333])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_words_survive_when_every_word_fits(seed: int, limit: int) -> None:
    text = random_prose(seed, 400)
    chunks = split_text(text, limit)
    assert_well_formed(chunks, limit)
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize("limit", [1, 2, 5, 9])
def test_no_character_is_lost_even_when_words_are_cut(limit: int) -> None:
    text = random_prose(4, 300)
    chunks = split_text(text, limit)
    assert_well_formed(chunks, limit)
    assert "".join("".join(chunks).split()) == "".join(text.split())


def test_paragraphs_are_preferred_over_sentences() -> None:
    first = "First paragraph. It has two sentences."
    second = "Second paragraph here."
    chunks = split_text(f"{first}\n\n{second}", len(first) + 5)
    assert chunks == [first, second]


def test_paragraphs_that_fit_together_stay_together() -> None:
    text = "One.\n\nTwo.\n\nThree is longer than the others."
    assert split_text(text, 12) == ["One.\n\nTwo.", "Three is", "longer than", "the others."]


def test_sentences_are_preferred_over_words() -> None:
    text = "This is the first sentence. This is the second one! And a third?"
    assert split_text(text, 30) == [
        "This is the first sentence.",
        "This is the second one!",
        "And a third?",
    ]


def test_lines_are_kept_whole_when_they_fit() -> None:
    text = "- apples\n- pears\n- plums"
    assert split_text(text, 17) == ["- apples\n- pears", "- plums"]


def test_a_word_longer_than_the_limit_is_cut() -> None:
    assert split_text("ab " + "x" * 10 + " cd", 4) == ["ab", "xxxx", "xxxx", "xx", "cd"]


def test_unicode_is_counted_in_characters() -> None:
    text = " ".join(["日本語テキスト"] * 20)
    chunks = split_text(text, 15)
    assert_well_formed(chunks, 15)
    assert chunks[0] == "日本語テキスト 日本語テキスト"
    emoji = "🙂" * 9
    assert split_text(emoji, 4) == ["🙂" * 4, "🙂" * 4, "🙂"]


def test_order_is_kept() -> None:
    text = " ".join(f"w{n}" for n in range(500))
    chunks = split_text(text, 50)
    assert " ".join(chunks).split() == [f"w{n}" for n in range(500)]


# --- limits in UTF-8 bytes -----------------------------------------------------------------


def utf8(text: str) -> int:
    return len(text.encode())


def visible(text: str) -> str:
    """What a reader sees of `text`, in order: splitting may only drop whitespace."""
    return "".join(character for character in text if not character.isspace())


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("café naïve", 6, ["café", "naïve"]),  # 5 and 6 bytes: the words stay whole
        ("ééééé", 5, ["éé", "éé", "é"]),  # a word cut between characters, never inside one
        ("🙂🙂🙂", 4, ["🙂", "🙂", "🙂"]),
        ("🙂🙂🙂", 7, ["🙂", "🙂", "🙂"]),
        ("日本語 テキスト", 9, ["日本語", "テキスト"[:3], "テキスト"[3:]]),
        ("ab 🙂 cd", 6, ["ab", "🙂", "cd"]),  # "ab 🙂" is 7 bytes
        ("ab 🙂 cd", 7, ["ab 🙂", "cd"]),
    ],
)
def test_bytes_are_counted_in_utf8(text: str, limit: int, expected: list[str]) -> None:
    assert split_text(text, limit, UTF8_BYTES) == expected


def test_a_byte_limit_below_one_character_is_refused() -> None:
    # Any character may take 4 bytes; a smaller limit could not always make progress.
    with pytest.raises(ValueError, match="at least 4 bytes"):
        split_text("abc", 3, UTF8_BYTES)


def test_prose_at_a_thousand_bytes() -> None:
    text = random_prose(3, 2500)
    chunks = split_text(text, 1000, UTF8_BYTES)
    assert all(0 < utf8(chunk) <= 1000 for chunk in chunks)
    assert len(chunks) > len(split_text(text, 1000))  # multi-byte text needs more parts
    assert " ".join(chunks).split() == text.split()


def test_any_additive_measure_can_be_used() -> None:
    # UTF-16 code units, as some channels count: an emoji is two of them.
    utf16 = Measure("UTF-16 units", lambda text: len(text.encode("utf-16-le")) // 2, 2)
    assert split_text("🙂🙂🙂", 4, utf16) == ["🙂🙂", "🙂"]
    assert split_text("🙂🙂🙂", 4) == ["🙂🙂🙂"]


_TEXT = st.text(
    alphabet=st.sampled_from([*"ab ye.!?\n\t", "é", "ß", "€", "日", "🙂", "\u00a0", "…"]),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, limit=st.integers(min_value=4, max_value=80))
def test_byte_split_keeps_everything_in_order_within_the_limit(text: str, limit: int) -> None:
    chunks = split_text(text, limit, UTF8_BYTES)
    for chunk in chunks:
        assert 0 < utf8(chunk) <= limit
        assert chunk == chunk.strip()
    assert visible("".join(chunks)) == visible(text)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, limit=st.integers(min_value=1, max_value=80))
def test_character_split_keeps_everything_in_order_within_the_limit(text: str, limit: int) -> None:
    chunks = split_text(text, limit, CHARACTERS)
    assert chunks == split_text(text, limit)
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk == chunk.strip()
    assert visible("".join(chunks)) == visible(text)


# --- the channels' limits, as properties ----------------------------------------------------

CHANNEL_LIMITS = [
    pytest.param(4096, CHARACTERS, id="whatsapp-4096-characters"),
    pytest.param(1000, UTF8_BYTES, id="instagram-1000-bytes"),
    pytest.param(2000, CHARACTERS, id="messenger-2000-characters"),
]

# Words of every width in UTF-8 (1 to 4 bytes a character, emoji with modifiers and ZWJ), now
# and then one longer than any limit, joined by spaces, sentence ends, lines and paragraphs.
_WORD = st.lists(
    st.sampled_from([*"abcxyz019", "é", "ß", "€", "日", "🙂", "👍🏽", "e\u0301", "-"]),
    min_size=1,
    max_size=12,
).map("".join)
_GIANT = st.lists(
    st.sampled_from(["x", "日", "🙂", "👨\u200d👩\u200d👧"]), min_size=300, max_size=1200
).map("".join)
_SEPARATOR = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", "\n\n", "\n \n\t", "  "])
_ANSWER = st.lists(
    st.tuples(st.one_of(_WORD, _WORD, _WORD, _GIANT), _SEPARATOR), min_size=1, max_size=900
).map(lambda pairs: "".join(word + separator for word, separator in pairs))


def spans(text: str, parts: list[str]) -> list[tuple[int, int]]:
    """Where each part lies in `text`, asserting that each is the next stretch of it and that
    only whitespace lies between them (and around them)."""
    found, position = [], 0
    for part in parts:
        start = position
        while start < len(text) and text[start].isspace():
            start += 1
        assert text.startswith(part, start), (position, part[:40])
        position = start + len(part)
        found.append((start, position))
    assert not text[position:].strip()
    return found


def assert_whole_and_in_order(text: str, parts: list[str]) -> None:
    spans(text, parts)


@pytest.mark.parametrize(("limit", "measure"), CHANNEL_LIMITS)
@settings(max_examples=60, deadline=None)
@given(text=_ANSWER)
def test_channel_limits_hold_and_nothing_is_lost(limit: int, measure: Measure, text: str) -> None:
    parts = split_text(text, limit, measure)
    for part in parts:
        assert 0 < measure.size(part) <= limit
        assert part == part.strip()
    assert_whole_and_in_order(text, parts)
    if measure.size(text.strip()) <= limit:
        assert parts == [text.strip()]


@pytest.mark.parametrize(("limit", "measure"), CHANNEL_LIMITS)
@settings(max_examples=60, deadline=None)
@given(text=_ANSWER)
def test_words_are_only_cut_when_longer_than_the_limit(
    limit: int, measure: Measure, text: str
) -> None:
    parts = split_text(text, limit, measure)
    places = spans(text, parts)
    for (_, end), (start, _) in itertools.pairwise(places):
        if start == end:  # no whitespace between: a word was cut here
            word_start = max(text.rfind(c, 0, end) for c in " \n\t") + 1
            word_end = min((i for c in " \n\t" if (i := text.find(c, end)) >= 0), default=len(text))
            assert measure.size(text[word_start:word_end]) > limit


@settings(max_examples=200, deadline=None)
@given(text=_TEXT, limit=st.integers(min_value=4, max_value=80))
def test_small_byte_limits_keep_the_text_whole(text: str, limit: int) -> None:
    assert_whole_and_in_order(text, split_text(text, limit, UTF8_BYTES))


@pytest.mark.parametrize(
    ("grapheme", "limit"),
    [("👍🏽", 10), ("👨\u200d👩\u200d👧", 20), ("e\u0301", 5), ("🇵🇹", 10), ("❤\ufe0f", 7)],
)
def test_a_cut_word_is_cut_between_graphemes(grapheme: str, limit: int) -> None:
    text = grapheme * 50
    parts = split_text(text, limit, UTF8_BYTES)
    assert "".join(parts) == text
    for part in parts:
        assert utf8(part) <= limit
        assert len(part) % len(grapheme) == 0  # whole graphemes only


def test_a_grapheme_wider_than_the_limit_is_still_cut() -> None:
    family = "👨\u200d👩\u200d👧"  # 18 bytes
    parts = split_text(family, 8, UTF8_BYTES)
    assert "".join(parts) == family
    assert all(utf8(part) <= 8 for part in parts)


def test_a_paragraph_break_ends_a_part_before_a_line_or_a_sentence() -> None:
    text = "Intro line.\nSecond line.\n\nNext paragraph. " + "More words here. " * 3
    assert split_text(text, 40)[0] == "Intro line.\nSecond line."


def test_indentation_inside_a_part_is_kept() -> None:
    text = "Steps:\n\n  1. one\n     detail\n\n" + "tail " * 20
    assert split_text(text, 40)[0] == "Steps:\n\n  1. one\n     detail"
