"""WhatsApp Cloud API: read its webhooks, send text replies and read receipts."""

from __future__ import annotations

from parley.channels.whatsapp.channel import WhatsAppChannel
from parley.channels.whatsapp.format import markdown_to_whatsapp
from parley.channels.whatsapp.models import CHANNEL
from parley.channels.whatsapp.parse import parse
from parley.channels.whatsapp.send import TEXT_LIMIT, mark_read, send_text

__all__ = [
    "CHANNEL",
    "TEXT_LIMIT",
    "WhatsAppChannel",
    "channel",
    "mark_read",
    "markdown_to_whatsapp",
    "parse",
    "send_text",
]

channel = WhatsAppChannel()
"""What the registry finds in this package."""
