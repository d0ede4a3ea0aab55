"""split_text and markdown_to_whatsapp."""

from __future__ import annotations

import random

import pytest

from parley.channels.text import markdown_to_whatsapp, split_text


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


# --- markdown_to_whatsapp ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~struck~~", "~struck~"),
        ("***both***", "*_both_*"),
        ("*italic with **bold** inside*", "_italic with *bold* inside_"),
        ("# Heading", "*Heading*"),
        ("### **Bold** heading ###", "*Bold heading*"),
        ("[the docs](https://example.com/a_b_c)", "the docs (https://example.com/a_b_c)"),
        ("[https://x.io](https://x.io)", "https://x.io"),
        ("![a cat](https://img.example/cat.png)", "a cat (https://img.example/cat.png)"),
        ("<https://example.com/x_y_z>", "https://example.com/x_y_z"),
        ("- one\n- two\n* three\n  + nested", "• one\n• two\n• three\n  • nested"),
        ("```python\nprint(a*b*c)\n```", "```print(a*b*c)```"),
        ("use `*args*` and `__init__`", "use `*args*` and `__init__`"),
        ("> quoted **word**", "> quoted *word*"),
        ("Total:\n\n**42 €**", "Total:\n\n*42 €*"),
    ],
)
def test_markdown_is_converted(markdown: str, whatsapp: str) -> None:
    assert markdown_to_whatsapp(markdown) == whatsapp


@pytest.mark.parametrize(
    "plain",
    [
        "2*3*4 = 24",
        "2**10 and 3**2",
        "a * b * c",
        "*.py and *.txt",
        "snake_case_words and more_snake_case",
        "https://example.com/_private_/path_with_underscores",
        "see www.example.com/a_b_c_d for details",
        "mail first_last@example.com",
        "x_1 + y_2 = z_3",
        "1. first\n2. second",
        "---",
        "* * *",
        "#hashtag is not a heading",
        "Price: $5 ~ $6, maybe ~7",
        "Hello! How can I help you today?\n\nOur hours are 9–17.",
        "Olá, tudo bem? 🙂 日本語",
    ],
)
def test_text_without_markdown_is_unchanged(plain: str) -> None:
    assert markdown_to_whatsapp(plain) == plain


def test_code_is_kept_verbatim() -> None:
    code = "```\ndef f(x_y):\n    return **kwargs\n```"
    assert markdown_to_whatsapp(code) == "```def f(x_y):\n    return **kwargs```"


def test_converted_text_then_splits_within_limit() -> None:
    text = "\n\n".join(
        f"## Part {n}\n\n**Note** {n}: see [link](https://e.x/{n})" for n in range(50)
    )
    chunks = split_text(markdown_to_whatsapp(text), 100)
    assert_well_formed(chunks, 100)
    assert "*Part 0*" in chunks[0]
    assert not any("**" in chunk or "](" in chunk for chunk in chunks)
