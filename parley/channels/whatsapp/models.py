"""The WhatsApp Cloud API webhook as pydantic models: lenient by design.

Meta adds fields without notice and hand-written fixtures differ from live bodies (integer
timestamps, numeric ids), so every model keeps unknown keys, coerces numbers to strings and
requires only what Parley cannot do without. Lists of messages and statuses stay raw here:
each item is validated on its own so one odd item never costs the rest of the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "CHANNEL",
    "Contact",
    "Envelope",
    "Message",
    "Status",
    "Value",
]

CHANNEL = "whatsapp"
OBJECT = "whatsapp_business_account"
MESSAGES_FIELD = "messages"


def _from_unix(value: Any) -> Any:
    """Unix seconds, as Meta's string (``"1749416383"``) or a fixture's integer, to UTC."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, bool):
        # bool is an int subclass; True is not a time.
        raise ValueError("timestamp must be unix seconds")
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, int | float):
        raise ValueError("timestamp must be unix seconds")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError) as exc:
        # pydantic reports only ValueError as a validation failure; anything else would escape.
        raise ValueError("timestamp out of range") from exc


UnixTime = Annotated[datetime, BeforeValidator(_from_unix)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, populate_by_name=True)


# --- envelope ------------------------------------------------------------------------------


class Envelope(_Lenient):
    object: str | None = None
    entry: list[Any] = Field(default_factory=list)


class Entry(_Lenient):
    id: str | None = None
    changes: list[Any] = Field(default_factory=list)


class Change(_Lenient):
    field: str | None = None
    value: Any = None


class Metadata(_Lenient):
    phone_number_id: str | None = None
    display_phone_number: str | None = None


class Value(_Lenient):
    metadata: Metadata | None = None
    contacts: list[Any] = Field(default_factory=list)
    messages: list[Any] = Field(default_factory=list)
    statuses: list[Any] = Field(default_factory=list)
    errors: list[Any] = Field(default_factory=list)


# --- contacts ------------------------------------------------------------------------------


class Profile(_Lenient):
    name: str | None = None
    username: str | None = None


class Contact(_Lenient):
    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile: Profile | None = None


# --- messages ------------------------------------------------------------------------------


class Context(_Lenient):
    id: str | None = None
    from_: str | None = Field(default=None, alias="from")
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None


class TextContent(_Lenient):
    body: str | None = None


class Reply(_Lenient):
    """An interactive ``button_reply`` or ``list_reply``."""

    id: str | None = None
    title: str | None = None
    description: str | None = None


class FlowReply(_Lenient):
    """An interactive ``nfm_reply``: a WhatsApp Flow's answer."""

    name: str | None = None
    body: str | None = None
    response_json: str | None = None


class Interactive(_Lenient):
    type: str | None = None
    button_reply: Reply | None = None
    list_reply: Reply | None = None
    nfm_reply: FlowReply | None = None


class Button(_Lenient):
    """A template's quick-reply button tapped."""

    text: str | None = None
    payload: str | None = None


class Location(_Lenient):
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class MediaContent(_Lenient):
    """An ``image``, ``audio``, ``video``, ``document`` or ``sticker`` message's file."""

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool = False
    animated: bool = False
    url: str | None = None
    """Newer payloads (from November 2025) add a direct URL; it needs the token too."""


class ContactName(_Lenient):
    formatted_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class ContactPhone(_Lenient):
    phone: str | None = None
    wa_id: str | None = None
    type: str | None = None


class SharedContact(_Lenient):
    """One card of a ``contacts`` message (vCard-like)."""

    name: ContactName | None = None
    phones: list[ContactPhone] = Field(default_factory=list)


class Message(_Lenient):
    id: NonEmpty
    timestamp: UnixTime
    from_: str | None = Field(default=None, alias="from")
    from_user_id: str | None = None
    type: str | None = None
    context: Context | None = None
    text: TextContent | None = None
    interactive: Interactive | None = None
    button: Button | None = None
    location: Location | None = None
    image: MediaContent | None = None
    audio: MediaContent | None = None
    video: MediaContent | None = None
    document: MediaContent | None = None
    sticker: MediaContent | None = None
    contacts: list[Any] = Field(default_factory=list)
    """Shared contact cards, each read on its own (`SharedContact`)."""
    errors: list[dict[str, Any]] = Field(default_factory=list)


# --- statuses ------------------------------------------------------------------------------


class Status(_Lenient):
    id: NonEmpty
    status: NonEmpty
    timestamp: UnixTime
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
