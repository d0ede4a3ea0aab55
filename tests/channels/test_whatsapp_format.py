"""markdown_to_whatsapp, and WhatsApp's rendering of an answer (formatted, then split)."""

from __future__ import annotations

import pytest

from parley.channels.text import split_text
from parley.channels.whatsapp import markdown_to_whatsapp


def assert_well_formed(chunks: list[str], limit: int) -> None:
    assert chunks
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk == chunk.strip()


# --- markdown_to_whatsapp ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~struck~~", "~struck~"),
        ("***both***", "_*both*_"),
        ("*italic with **bold** inside*", "_italic with *bold* inside_"),
        ("# Heading", "*Heading*"),
        ("### **Bold** heading ###", "*Bold heading*"),
        ("[the docs](https://example.com/a_b_c)", "the docs (https://example.com/a_b_c)"),
        ("[https://x.io](https://x.io)", "https://x.io"),
        ("![a cat](https://img.example/cat.png)", "a cat (https://img.example/cat.png)"),
        ("<https://example.com/x_y_z>", "https://example.com/x_y_z"),
        ("- one\n- two\n* three\n  + nested", "- one\n- two\n\n- three\n  - nested"),
        ("```python\nprint(a*b*c)\n```", "```print(a*b*c)```"),
        ("use `*args*` and `__init__`", "use `*args*` and `__init__`"),
        ("> quoted **word**", "> quoted *word*"),
        ("Total:\n\n**42 €**", "Total:\n\n*42 €*"),
        ("1. **Pay**\n2. Wait", "1. *Pay*\n2. Wait"),
        ("**two\nlines**", "*two*\n*lines*"),
        ("## Plans\n\n| plan | € |\n|---|---|\n| *Pro* | 9 |", "*Plans*\n\nplan | €\n_Pro_ | 9"),
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
        "https://example.com/_private_/x and http://a.b/**c**/d",
        "AT&amp;T &copy; <b>not html</b>",
        "[ref]: https://example.com/not-a-definition",
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
