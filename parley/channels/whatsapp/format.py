"""The agent's Markdown as WhatsApp formats it: *bold*, _italic_, ~strike~, `code` and
```code blocks```, "- " and "1. " lists, "> " quotes; links as "text (url)", headings as bold
lines. The parsing is `parley.channels.markdown`'s; this is only WhatsApp's style."""

from __future__ import annotations

from parley.channels.markdown import Style, render

__all__ = ["WHATSAPP", "markdown_to_whatsapp"]

WHATSAPP = Style(bold="*", italic="_", strike="~", code="`", code_block="```", bullet="- ")


def markdown_to_whatsapp(text: str) -> str:
    """The agent's Markdown as WhatsApp formats it; text without Markdown comes back unchanged."""
    return render(text, WHATSAPP)
