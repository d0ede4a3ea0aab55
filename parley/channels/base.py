"""What every channel hands the rest of Parley: plain, frozen facts parsed from a webhook.

A channel module turns its webhook bodies into these and knows how to send a reply; nothing
above `channels/` sees a channel's own payload shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a customer sent to a business account."""

    channel: str
    """``whatsapp``, ``instagram``, ``messenger``."""
    account_external_id: str
    """The business side: WhatsApp ``phone_number_id``, Instagram account id or page id."""
    channel_message_id: str
    """The channel's id of this message (WhatsApp ``wamid``); unique per account."""
    user_id: str | None
    """The channel's stable user id (WhatsApp BSUID ``CC.…``, Instagram IGSID), when present."""
    phone: str | None
    """The customer's phone number (WhatsApp ``wa_id``/``from``), when present."""
    contact_name: str | None
    contact_username: str | None
    kind: str
    """``text``, ``image``, ``audio``, ``video``, ``document``, ``sticker``, ``location``,
    ``contacts``, ``interactive``, ``button``, ``reaction``, ``order``, ``system``,
    ``unsupported``."""
    text: str | None
    """What the agent can read of it: the body, a button's title, a location described; None
    for content the agent cannot understand yet (media, orders)."""
    needs_reply: bool
    """False for events a customer does not expect an answer to (reactions, system notices)."""
    timestamp: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    """The channel's raw message object, stored for audit."""
    reply_to: str | None = None
    """The channel message id this one quotes, if any."""

    @property
    def contact_key(self) -> str:
        """The key a contact is stored under: the stable user id, else the phone number."""
        return self.user_id or self.phone or "unknown"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The channel's report on a message Parley sent: sent, delivered, read, played, failed."""

    channel: str
    account_external_id: str
    channel_message_id: str
    status: str
    timestamp: datetime
    recipient: str | None = None
    errors: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """Everything one webhook POST carried; items that could not be read are counted, not fatal."""

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class SendResult:
    """The channel accepted a message: its id for status tracking."""

    channel_message_id: str | None
