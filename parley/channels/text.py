"""Channel-independent text shaping: split an answer to a length limit, and turn the agent's
Markdown into WhatsApp's own formatting."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["markdown_to_whatsapp", "split_text"]

# Coarsest first: a chunk should break where a reader expects a pause. Each pattern captures
# its separator so packed pieces are rejoined with the whitespace they had.
_BOUNDARIES = (
    re.compile(r"(\n\s*\n)"),  # paragraphs
    re.compile(r"(\n)"),  # lines: list items, addresses
    re.compile(r"(?<=[.!?…。！？])(\s+)"),  # sentences
    re.compile(r"(\s+)"),  # words
)


def split_text(text: str, limit: int) -> list[str]:
    """`text` in order as chunks of at most `limit` characters, none empty, none padded.

    Breaks at paragraphs, else lines, else sentence ends, else whitespace; only a single word
    longer than `limit` is cut mid-word.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return _split(text.strip(), limit, 0)


def _split(text: str, limit: int, level: int) -> list[str]:
    if len(text) <= limit:
        return [text] if text else []
    if level == len(_BOUNDARIES):
        return _hard_cut(text, limit)
    parts = _BOUNDARIES[level].split(text)
    if len(parts) == 1:
        return _split(text, limit, level + 1)
    return _pack(parts, limit, level)


def _pack(parts: list[str], limit: int, level: int) -> list[str]:
    """Greedily join pieces (with their original separators) while they fit."""
    chunks: list[str] = []
    current = ""
    for index in range(0, len(parts), 2):
        piece = parts[index].strip()
        separator = parts[index - 1] if index else ""
        if not piece:
            continue
        if current and len(current) + len(separator) + len(piece) <= limit:
            current += separator + piece
            continue
        if current:
            chunks.append(current)
            current = ""
        if len(piece) <= limit:
            current = piece
        else:
            chunks.extend(_split(piece, limit, level + 1))
    if current:
        chunks.append(current)
    return chunks


def _hard_cut(text: str, limit: int) -> list[str]:
    pieces = (text[start : start + limit].strip() for start in range(0, len(text), limit))
    return [piece for piece in pieces if piece]


# --- Markdown → WhatsApp -------------------------------------------------------------------
#
# WhatsApp knows *bold*, _italic_, ~strike~, ```monospace```, `inline code`, "> " quotes and
# "- " lists. Spans that must survive verbatim (code, URLs, escaped characters) are swapped
# for NUL-delimited placeholders first, so the emphasis rules can never reach inside them.

_HOLD = "\x00{}\x00"
_HELD = re.compile(r"\x00(\d+)\x00")
_BOLD = "\x01"  # stands for WhatsApp's bold "*" until single-star italics are converted

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_ESCAPE = re.compile(r"\\([\\`*_~#\[\]()>+\-.!|{}])")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_BARE_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()]+[^\s<>().,;:!?'\"]")
_RULE = re.compile(r"[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*")
_BULLET = re.compile(r"([ \t]*)[-*+][ \t]+")
# Stars glued to a word are arithmetic or globs ("2**10", "2*3*4", "*.py"), not emphasis.
_BOLD_ITALIC = re.compile(r"(?<![\w*])\*\*\*(?=\S)([^\n]+?)(?<=\S)\*\*\*(?![\w*])")
_BOLD_STARS = re.compile(r"(?<![\w*])\*\*(?=\S)([^\n]+?)(?<=\S)\*\*(?![\w*])")
_BOLD_UNDERSCORES = re.compile(r"(?<![\w_])__(?=\S)([^\n]+?)(?<=\S)__(?![\w_])")
_ITALIC_STARS = re.compile(r"(?<![\w*])\*(?=[^\s*])([^\n*]+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)([^\n]+?)(?<=\S)~~")


class _Vault:
    """Spans taken out of the text while it is rewritten, put back at the end."""

    def __init__(self) -> None:
        self._spans: list[str] = []

    def hold(self, span: str) -> str:
        self._spans.append(span)
        return _HOLD.format(len(self._spans) - 1)

    def release(self, text: str) -> str:
        return _HELD.sub(lambda match: self._spans[int(match.group(1))], text)


def markdown_to_whatsapp(text: str) -> str:
    """The agent's Markdown as WhatsApp formats it; text without Markdown comes back unchanged."""
    vault = _Vault()
    text = text.replace("\x00", "").replace(_BOLD, "")
    text = _hold_verbatim(text, vault)
    text = "\n".join(_convert_line(line) for line in text.split("\n"))
    text = _convert_inline(text)
    return vault.release(text)


def _hold_verbatim(text: str, vault: _Vault) -> str:
    text = _FENCE.sub(lambda m: vault.hold(_fence(m.group(1))), text)
    text = _INLINE_CODE.sub(lambda m: vault.hold(m.group(0)), text)
    text = _ESCAPE.sub(lambda m: vault.hold(m.group(1)), text)
    text = _IMAGE_OR_LINK.sub(lambda m: _link(m.group(1), m.group(2), vault), text)
    text = _AUTOLINK.sub(lambda m: vault.hold(m.group(1)), text)
    return _BARE_URL.sub(lambda m: vault.hold(m.group(0)), text)


def _fence(code: str) -> str:
    # WhatsApp would print a language tag ("```python") as part of the code.
    return "```" + code.strip("\n") + "```"


def _link(label: str, url: str, vault: _Vault) -> str:
    held = vault.hold(url)
    label = label.strip()
    return held if not label or label == url else f"{label} ({held})"


def _convert_line(line: str) -> str:
    if _RULE.fullmatch(line):
        return line
    heading = _HEADING.fullmatch(line)
    if heading:
        title = re.sub(r"\*\*|__", "", heading.group(1))
        return f"{_BOLD}{title}{_BOLD}"
    bullet = _BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {line[bullet.end() :]}"
    return line


_INLINE_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_BOLD_ITALIC, lambda m: f"{_BOLD}_{m.group(1)}_{_BOLD}"),
    (_BOLD_STARS, lambda m: f"{_BOLD}{m.group(1)}{_BOLD}"),
    (_BOLD_UNDERSCORES, lambda m: f"{_BOLD}{m.group(1)}{_BOLD}"),
    (_ITALIC_STARS, lambda m: f"_{m.group(1)}_"),
    (_STRIKE, lambda m: f"~{m.group(1)}~"),
)


def _convert_inline(text: str) -> str:
    for pattern, replace in _INLINE_RULES:
        text = pattern.sub(replace, text)
    return text.replace(_BOLD, "*")
