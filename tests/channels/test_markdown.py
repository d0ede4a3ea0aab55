"""markdown.render: Markdown in a channel's style, from markdown-it-py's tokens; nothing a reader
sees is lost, in any style."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from parley.channels import markdown
from parley.channels.whatsapp.format import WHATSAPP
from tests.conftest import cyclic_garbage

STYLES = [markdown.PLAIN, WHATSAPP]


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("**bold**, *italic*, ~~struck~~", "bold, italic, struck"),
        ("# Opening hours\n\nMon–Fri", "Opening hours\n\nMon–Fri"),
        ("- one\n- two\n  1. nested", "• one\n• two\n  1. nested"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("[the docs](https://x.io/a_b)", "the docs (https://x.io/a_b)"),
        ("[https://x.io](https://x.io) and <https://y.io>", "https://x.io and https://y.io"),
        ("write to <ana@example.com>", "write to ana@example.com"),
        ("![map](https://x.io/m.png)", "map (https://x.io/m.png)"),
        ("run `pip *install*`", "run pip *install*"),
        ("```sh\necho **hi**\n```", "echo **hi**"),
        ("> **note** this", "> note this"),
        ("2*3*4 and 2**10", "2*3*4 and 2**10"),
        ("a\\*b\\* stays", "a*b* stays"),
    ],
)
def test_plain_style_drops_markup_and_keeps_text(source: str, plain: str) -> None:
    assert markdown.render(source, markdown.PLAIN) == plain


def test_plain_is_the_default_style() -> None:
    assert markdown.render("**hi**") == "hi"


def test_loose_lists_keep_their_blank_lines() -> None:
    assert markdown.render("- a\n\n- b", markdown.PLAIN) == "• a\n\n• b"


def test_a_custom_style_is_honoured() -> None:
    style = markdown.Style(bold="**", italic=None, strike=None, code="'", code_block=None)
    assert markdown.render("**b** *i* `c`", style) == "**b** i 'c'"


# --- nothing is lost ------------------------------------------------------------------------

# Markup characters mixed with words, so the parser meets every construct, broken ones too.
MARKDOWNISH = st.lists(
    st.sampled_from(
        list("ab yz019éß日🙂") + list("*_~`#>-+.)[]()!<>:/\\|=") + [" ", "\n", "\n\n", "  "]
    ),
    max_size=200,
).map("".join)


def words(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def is_subsequence(small: str, big: str) -> bool:
    letters = iter(big)
    return all(ch in letters for ch in small)


def visible_text(source: str) -> str:
    """What a Markdown viewer shows of `source`'s words: the text and code of every token
    (what `render` must never drop), by the same parser settings."""
    parser = (
        MarkdownIt("commonmark", {"html": False})
        .enable(["strikethrough", "table"])
        .disable(["reference", "entity"])
    )
    shown: list[str] = []
    for token in parser.parse(source):
        if token.type in ("fence", "code_block"):
            shown.append(token.content)
        for child in token.children or []:
            if child.type in ("text", "code_inline"):
                shown.append(child.content)
    return words("".join(shown))


@pytest.mark.parametrize("style", STYLES, ids=["plain", "whatsapp"])
@settings(max_examples=300, deadline=None)
@given(source=MARKDOWNISH)
def test_every_visible_word_survives_in_order(style: markdown.Style, source: str) -> None:
    assert is_subsequence(visible_text(source), words(markdown.render(source, style)))


# Without brackets, fences (``` or ~~~), quotes or entities nothing is even markup-only text (a
# link's title, a fence's language tag): every letter and digit written must reach the customer.
PROSE_WITH_STARS = st.lists(
    st.sampled_from([*list("ab yz01é日🙂*_#>-+.!:/|="), " ~~", " ", "\n", "\n\n"]),
    max_size=200,
).map("".join)


@pytest.mark.parametrize("style", STYLES, ids=["plain", "whatsapp"])
@settings(max_examples=300, deadline=None)
@given(source=PROSE_WITH_STARS)
def test_no_letter_or_digit_is_lost(style: markdown.Style, source: str) -> None:
    assert is_subsequence(words(source), words(markdown.render(source, style)))


@settings(max_examples=200, deadline=None)
@given(source=st.text(alphabet=st.sampled_from([*list("ab 019é.,!?;:'\"()"), "\n"]), max_size=200))
def test_text_without_markup_comes_back_unchanged(source: str) -> None:
    # Only whitespace may change: surrounding blanks, and the spaces Markdown itself ignores.
    for style in STYLES:
        rendered = markdown.render(source, style)
        assert re.sub(r"\s+", " ", rendered).strip() == re.sub(r"\s+", " ", source).strip()


def test_a_rendered_reply_leaves_nothing_for_the_garbage_collector() -> None:
    """The parse tree's nodes name their parents: unlinked once written out, every reply's
    tree is freed by reference counting, not in a collection's pause on the event loop."""
    source = "# Hours\n\n**Mon**–Fri, *9–5*\n\n- one\n  1. nested [x](https://x.io)\n\n> `q`"
    markdown.render(source, WHATSAPP)
    with cyclic_garbage() as cyclic:
        for style in STYLES:
            assert markdown.render(source, style).startswith(("*Hours*", "Hours"))
    assert cyclic == []
