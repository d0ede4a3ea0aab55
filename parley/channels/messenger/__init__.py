"""Facebook Messenger: a page's conversations, through the Messenger Platform."""

from __future__ import annotations

from parley.channels.messenger.channel import CHANNEL, TEXT_LIMIT, MessengerChannel

__all__ = ["CHANNEL", "TEXT_LIMIT", "MessengerChannel", "channel"]

channel = MessengerChannel()
"""What the registry finds in this package."""
