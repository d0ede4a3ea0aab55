"""An agent's Markdown answer as a channel shows it: its formatting, within its length limit."""

from __future__ import annotations

from parley.channels import registry
from parley.channels.text import split_text
from parley.errors import UnknownChannel

DEFAULT_LIMIT = 1000
"""Characters a part may have for a channel nobody registered: short enough for any of them."""


def render_text(channel_name: str, text: str) -> list[str]:
    """The parts to send, in order; none longer than the channel allows, none empty."""
    try:
        channel = registry.get(channel_name)
    except UnknownChannel:
        # The reply is still stored; delivery then records why it could not be sent.
        return split_text(text, DEFAULT_LIMIT)
    return channel.render(text)
