"""The Messenger Platform webhook (Messenger and Instagram messaging) as pydantic models,
lenient by design.

Meta adds fields without notice, its dashboard's test events break its own rules (a string
timestamp in seconds where live events carry integer milliseconds), and 2026 Instagram reads
and edits have arrived with no sender at all. So every model keeps unknown keys, coerces
numbers to strings and requires nothing: what an item cannot do without is checked where it is
read, so one odd item never costs the rest of the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Attachment",
    "Edit",
    "Entry",
    "Envelope",
    "Item",
    "MessageBody",
    "Postback",
    "Reaction",
    "Receipt",
]

_MILLISECONDS_FROM = 10**11
"""Above this a timestamp is milliseconds (year 1973 in ms, year 5138 in seconds)."""


def _from_epoch(value: Any) -> Any:
    """Milliseconds (live events) or seconds (dashboard tests), as a number or a string."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, bool):
        raise ValueError("timestamp must be a number")
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, int | float):
        raise ValueError("timestamp must be a number")
    seconds = value / 1000 if abs(value) >= _MILLISECONDS_FROM else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError) as exc:
        # pydantic reports only ValueError as a validation failure; anything else would escape.
        raise ValueError("timestamp out of range") from exc


EpochTime = Annotated[datetime | None, BeforeValidator(_from_epoch)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, populate_by_name=True)


class Envelope(_Lenient):
    object: str | None = None
    entry: list[Any] = Field(default_factory=list)


class Entry(_Lenient):
    id: str | None = None
    time: EpochTime = None
    messaging: list[Any] = Field(default_factory=list)
    standby: list[Any] = Field(default_factory=list)
    """Events of threads another app owns (handover protocol): not ours to answer."""


class Party(_Lenient):
    id: str | None = None


class Attachment(_Lenient):
    type: str | None = None
    payload: dict[str, Any] | None = None
    url: str | None = None
    """Messenger's ``fallback`` attachments (a shared link) carry their URL here."""
    title: str | None = None


class StoryRef(_Lenient):
    url: str | None = None
    id: str | None = None


class ReplyTo(_Lenient):
    mid: str | None = None
    story: StoryRef | None = None


class QuickReply(_Lenient):
    payload: str | None = None


class MessageBody(_Lenient):
    mid: str | None = None
    text: str | None = None
    attachments: list[Any] = Field(default_factory=list)
    quick_reply: QuickReply | None = None
    reply_to: ReplyTo | None = None
    # Older docs spelled the flags as strings ("true"); pydantic reads both.
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False
    app_id: str | None = None


class Edit(_Lenient):
    mid: str | None = None
    text: str | None = None
    num_edit: int | None = None


class Reaction(_Lenient):
    mid: str | None = None
    action: str | None = None
    reaction: str | None = None
    emoji: str | None = None


class Receipt(_Lenient):
    """A ``read`` (Instagram names the message, Messenger a watermark) or a ``delivery``."""

    mid: str | None = None
    mids: list[str] = Field(default_factory=list)
    watermark: EpochTime = None


class Postback(_Lenient):
    mid: str | None = None
    title: str | None = None
    payload: str | None = None


class Item(_Lenient):
    """One ``messaging[]`` item: who, when, and exactly one event key."""

    sender: Party | None = None
    recipient: Party | None = None
    timestamp: EpochTime = None
    message: MessageBody | None = None
    message_edit: Edit | None = None
    reaction: Reaction | None = None
    read: Receipt | None = None
    delivery: Receipt | None = None
    postback: Postback | None = None
