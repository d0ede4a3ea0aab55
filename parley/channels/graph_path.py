"""Graph API URLs built from ids that arrived in webhooks or the store.

An id is one path segment, never more: percent-encoded whole (``/``, ``?``, ``#``, ``%``…) and
its dots too, so that ``..`` cannot become a dot segment that an HTTP client resolves (which
would send an account's token to another Graph endpoint). Ids are checked at the door as the
channel writes them; this is the second line, wherever a URL is built.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["segment"]


def segment(part: str) -> str:
    """`part` as exactly one URL path segment."""
    return quote(part, safe="").replace(".", "%2E")
