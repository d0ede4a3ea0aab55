"""Meta's Messenger Platform, which Messenger and Instagram messaging both speak: its webhook
format, its Send API and sender actions, and a `Channel` base for the two. Not a channel
itself (no ``channel`` here): `parley.channels.messenger` and `parley.channels.instagram` are."""

from __future__ import annotations

from parley.channels.messenger_platform.channel import RECEIPT_ACTIONS, MessengerPlatformChannel
from parley.channels.messenger_platform.parse import SYNTHETIC_ID_PREFIX, parse

__all__ = ["RECEIPT_ACTIONS", "SYNTHETIC_ID_PREFIX", "MessengerPlatformChannel", "parse"]
