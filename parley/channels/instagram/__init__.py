"""Instagram messaging, in both of Meta's setups: Instagram Login (graph.instagram.com) and an
Instagram account linked to a Facebook page (the Graph API, with the page's token)."""

from __future__ import annotations

from parley.channels.instagram.channel import (
    CHANNEL,
    FACEBOOK_PAGE,
    INSTAGRAM_LOGIN,
    TEXT_LIMIT,
    InstagramChannel,
)

__all__ = [
    "CHANNEL",
    "FACEBOOK_PAGE",
    "INSTAGRAM_LOGIN",
    "TEXT_LIMIT",
    "InstagramChannel",
    "channel",
]

channel = InstagramChannel()
"""What the registry finds in this package."""
