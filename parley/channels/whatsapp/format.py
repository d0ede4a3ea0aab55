"""The agent's Markdown as WhatsApp formats it.

WhatsApp knows *bold*, _italic_, ~strike~, ```monospace```, `inline code`, "> " quotes and
"- " lists. Spans that must survive verbatim (code, URLs, escaped characters) are swapped
for NUL-delimited placeholders first, so the emphasis rules can never reach inside them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["markdown_to_whatsapp"]

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
