"""An agent's Markdown answer as a channel shows it: its formatting, within its length limit."""

from __future__ import annotations

from parley.channels.text import markdown_to_whatsapp, split_text

TEXT_LIMITS = {"whatsapp": 4096, "instagram": 1000, "messenger": 2000}
DEFAULT_LIMIT = 1000


def render_text(channel: str, text: str) -> list[str]:
    """The parts to send, in order; none longer than the channel allows, none empty."""
    formatted = markdown_to_whatsapp(text) if channel == "whatsapp" else text
    return split_text(formatted, TEXT_LIMITS.get(channel, DEFAULT_LIMIT))
