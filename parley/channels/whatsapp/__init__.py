"""WhatsApp Cloud API: read its webhooks, send text replies and read receipts."""

from __future__ import annotations

from parley.channels.whatsapp.models import CHANNEL
from parley.channels.whatsapp.parse import parse
from parley.channels.whatsapp.send import TEXT_LIMIT, mark_read, send_text

__all__ = ["CHANNEL", "TEXT_LIMIT", "mark_read", "parse", "send_text"]
