"""The agent's Markdown in a channel's own formatting, read with a real parser (markdown-it-py).

A channel names a `Style`: which markers its app shows as bold, italic, struck or monospace
(None: the channel has none, and the text is kept without the markup), and how it writes list
items. `render(text, style)` parses the Markdown once and writes the token tree back out in
that style, so emphasis inside code, URLs or words can never be mistaken for formatting:

    render("**Hi** [docs](https://x.io)", PLAIN)  ->  "Hi docs (https://x.io)"

Nothing a reader sees is dropped: link reference definitions, HTML and character entities are
left as the text they are (chat apps show no HTML), and a delimiter run the parser took for
emphasis inside a word or a URL (``2*3*4``, ``https://x.io/_a_/``) is written back as it was.
What is dropped is markup only: emphasis markers a channel cannot show, heading ``#``s, a
code fence's language tag, a link's tooltip title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

__all__ = ["PLAIN", "Style", "render"]


@dataclass(frozen=True, slots=True)
class Style:
    """How one channel writes what Markdown means."""

    bold: str | None
    """The marker put on both sides of bold text (WhatsApp ``*``); None for none."""
    italic: str | None
    strike: str | None
    code: str | None
    """The marker around inline code (```` ` ````); None keeps the code as plain text."""
    code_block: str | None
    """The marker around a code block (```` ``` ````); None keeps the lines as they are."""
    bullet: str = "• "
    """What starts an item of an unordered list."""
    quote: str = "> "
    """What starts each line of a block quote."""


PLAIN = Style(bold=None, italic=None, strike=None, code=None, code_block=None)
"""No markup at all (Messenger, Instagram): emphasis dropped, lists as ``• `` and ``1. ``,
links as ``text (url)``, code kept verbatim, headings as lines of their own."""

_PARSER = (
    MarkdownIt("commonmark", {"html": False})
    .enable(["strikethrough", "table"])
    # A reference definition ("[a]: url") renders as nothing, and an entity ("&amp;") as
    # another text: both would change what the agent wrote, so both stay plain text.
    .disable(["reference", "entity"])
)

_URL_TAIL = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)\S*$")
_EMPHASIS = {"em": "italic", "strong": "bold", "s": "strike"}


def render(text: str, style: Style = PLAIN) -> str:
    """`text` read as Markdown, written in `style`; text without Markdown comes back as it is
    (but for surrounding whitespace)."""
    tree = SyntaxTreeNode(_PARSER.parse(text))
    try:
        return _Writer(style, text.splitlines()).blocks(tree.children).strip()
    finally:
        _unlink(tree)


def _unlink(tree: SyntaxTreeNode) -> None:
    """Each node of the tree names its parent, and the parent its children: a reference cycle
    per node, which only the garbage collector frees, in pauses that hold up the event loop
    (every reply is written through here). Without the parents, reference counting frees the
    tree as soon as it is written out."""
    for node in tree.walk():
        node.parent = None


class _Writer:
    def __init__(self, style: Style, lines: list[str]) -> None:
        self.style = style
        self.lines = lines

    # --- blocks ---------------------------------------------------------------------
    def blocks(self, nodes: list[SyntaxTreeNode], separator: str = "\n\n") -> str:
        return separator.join(part for node in nodes if (part := self.block(node)))

    def block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "paragraph":
            return self.inline_of(node)
        if kind == "heading":
            # A heading is a bold line; bold inside it is not doubled.
            return _wrap(self.inline_of(node, frozenset({"bold"})), self.style.bold)
        if kind in ("bullet_list", "ordered_list"):
            return self.items(node)
        if kind == "blockquote":
            quote = self.style.quote
            inner = self.blocks(node.children).split("\n")
            return "\n".join(quote + line if line else quote.rstrip() for line in inner)
        if kind in ("fence", "code_block"):
            # An empty fence shows nothing in a viewer; here its line is kept as written.
            return self.code_block(node.content) if node.content.strip() else self.source(node)
        if kind == "table":
            return self.table(node)
        if kind == "hr":
            return self.source(node)
        # Anything else the parser may add later: its text as written, never nothing.
        return node.content or self.source(node)

    def inline_of(self, node: SyntaxTreeNode, active: frozenset[str] = frozenset()) -> str:
        return "".join(self.inline(child, active) for child in node.children)

    def items(self, node: SyntaxTreeNode) -> str:
        paragraphs = [c for item in node.children for c in item.children if c.type == "paragraph"]
        tight = all(paragraph.hidden for paragraph in paragraphs)
        start = int(node.attrs.get("start", 1))
        items = []
        for index, item in enumerate(node.children):
            if node.type == "ordered_list":
                # The number as the agent wrote it ("1." for every item stays so).
                marker = f"{item.info or start + index}{item.markup or '.'} "
            else:
                marker = self.style.bullet
            body = self.blocks(item.children, "\n" if tight else "\n\n")
            indent = " " * len(marker)
            lines = body.split("\n")
            items.append(
                "\n".join(
                    [marker + lines[0], *(indent + line if line else line for line in lines[1:])]
                )
            )
        return ("\n" if tight else "\n\n").join(items)

    def code_block(self, code: str) -> str:
        code = code.strip("\n")
        marker = self.style.code_block
        # The fence's language tag is not shown: WhatsApp would print it as code.
        return f"{marker}{code}{marker}" if marker and code else code

    def table(self, node: SyntaxTreeNode) -> str:
        rows = [row for section in node.children for row in section.children]
        return "\n".join(" | ".join(self.inline_of(cell) for cell in row.children) for row in rows)

    def source(self, node: SyntaxTreeNode) -> str:
        if node.map is None:
            return ""
        first, last = node.map
        return "\n".join(self.lines[first:last]).strip()

    # --- inline ---------------------------------------------------------------------
    def inline(self, node: SyntaxTreeNode, active: frozenset[str]) -> str:
        kind = node.type
        if kind == "inline":
            return self.runs(node.children, active)
        if kind == "text":
            return node.content
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            marker = self.style.code
            return f"{marker}{node.content}{marker}" if marker else node.content
        if kind == "link":
            return self.link(node, active)
        if kind == "image":
            return self.link_text(self.runs(node.children, active), node.attrs.get("src"))
        return node.content

    def runs(self, nodes: list[SyntaxTreeNode], active: frozenset[str]) -> str:
        out: list[str] = []
        for index, node in enumerate(nodes):
            if node.type in _EMPHASIS:
                following = nodes[index + 1] if index + 1 < len(nodes) else None
                out.append(self.emphasis(node, active, "".join(out), following))
            else:
                out.append(self.inline(node, active))
        return "".join(out)

    def emphasis(
        self,
        node: SyntaxTreeNode,
        active: frozenset[str],
        before: str,
        following: SyntaxTreeNode | None,
    ) -> str:
        after = following.content if following is not None and following.type == "text" else ""
        name = _EMPHASIS[node.type]
        inner_active = active | {name}
        inner = self.runs(node.children, inner_active)
        if _is_literal(before, after):
            return f"{node.markup}{inner}{node.markup}"
        marker = getattr(self.style, name)
        if marker is None or name in active:
            return inner
        return _wrap(inner, marker)

    def link(self, node: SyntaxTreeNode, active: frozenset[str]) -> str:
        text = self.runs(node.children, active)
        if node.markup == "autolink":
            return text
        return self.link_text(text, node.attrs.get("href"))

    @staticmethod
    def link_text(text: str, url: object) -> str:
        if not isinstance(url, str) or not url:
            return text
        if not text.strip() or text.strip() in (url, url.removeprefix("mailto:")):
            return url
        return f"{text} ({url})"


def _is_literal(before: str, after: str) -> bool:
    """Delimiters glued to a word on both sides are arithmetic or globs ("2*3*4", "2**10"),
    and any inside a URL are part of it: CommonMark reads both as emphasis, a reader does not."""
    if before[-1:].isalnum() and after[:1].isalnum():
        return True
    return bool(_URL_TAIL.search(before))


def _wrap(text: str, marker: str | None) -> str:
    """`text` between `marker`s, line by line (chat apps format within one line), with the
    markers against the words: ``* bold *`` is not bold anywhere."""
    if not marker:
        return text
    lines = []
    for line in text.split("\n"):
        core = line.strip()
        if not core:
            lines.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        trail = line[len(line.rstrip()) :]
        lines.append(f"{lead}{marker}{core}{marker}{trail}")
    return "\n".join(lines)
