"""A WhatsApp webhook body → `ParsedWebhook`: the messages and statuses it carried.

Only a body that is not a WhatsApp webhook at all is refused (`BadPayload`). Inside a batch
every entry, change, message and status is read on its own; one that cannot be read is logged
(never with its text) and counted in ``skipped``, and the rest still arrive. A body without
``object`` (or with ``null``) is accepted: its signature already proved Meta sent it, and
refusing it would only make Meta redeliver it for a week.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from parley.channels.base import InboundMessage, Media, ParsedWebhook, StatusUpdate
from parley.channels.text import storable_json
from parley.channels.whatsapp.models import (
    CHANNEL,
    MESSAGES_FIELD,
    OBJECT,
    Change,
    Contact,
    Entry,
    Envelope,
    Interactive,
    Location,
    MediaContent,
    Message,
    SharedContact,
    Status,
    Value,
)
from parley.errors import BadPayload

__all__ = ["NO_REPLY_TYPES", "parse"]

log = structlog.get_logger(__name__)

# What a broken item can raise while read; anything else is a bug and should surface.
_ITEM_ERRORS = (ValidationError, KeyError, ValueError, TypeError)

KINDS = (
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
)
"""Parley's message kinds; also the content keys a type-less message is recognised by."""

NO_REPLY_TYPES = frozenset({"reaction", "system", "request_welcome"})
"""Message types nobody expects an answer to: a reaction or its removal, a notice such as a
number change, and ``request_welcome`` (the user opened a first chat and wrote nothing; a
greeting there is a welcome-message feature, not an answer). ``ephemeral`` and
``unsupported`` still get an answer: the customer did write something and should hear that
we cannot read it."""


class _Unusable(ValueError):
    """An item that parsed but cannot become a message; its text is safe to log."""


@dataclass
class _Batch:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    skipped: int = 0

    def skip(
        self, item: str, exc: Exception | None = None, *, count: int = 1, **where: Any
    ) -> None:
        self.skipped += count
        log.warning("whatsapp.item_skipped", item=item, count=count, reason=_reason(exc), **where)

    def result(self) -> ParsedWebhook:
        return ParsedWebhook(messages=self.messages, statuses=self.statuses, skipped=self.skipped)


def parse(body: bytes) -> ParsedWebhook:
    """Every message and status in `body`, in order; unreadable items counted as skipped."""
    batch = _Batch()
    for raw_entry in _envelope(body).entry:
        _read_entry(raw_entry, batch)
    return batch.result()


def _envelope(body: bytes) -> Envelope:
    try:
        # A NUL or lone surrogate escape must not cost the batch its filing.
        data = storable_json(body)
    except (ValueError, RecursionError) as exc:
        raise BadPayload("body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadPayload("body is not a JSON object")
    if data.get("object") not in (None, OBJECT):
        raise BadPayload("object is not whatsapp_business_account")
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        raise BadPayload("entry is not a list") from exc


def _read_entry(raw: Any, batch: _Batch) -> None:
    try:
        entry = Entry.model_validate(raw)
    except _ITEM_ERRORS as exc:
        batch.skip("entry", exc)
        return
    for raw_change in entry.changes:
        _read_change(raw_change, batch)


def _read_change(raw: Any, batch: _Batch) -> None:
    try:
        change = Change.model_validate(raw)
        if change.field != MESSAGES_FIELD:
            return  # user_preferences, account_update, …: not chat, not an error
        value = Value.model_validate(change.value)
    except _ITEM_ERRORS as exc:
        batch.skip("change", exc)
        return
    _read_value(value, batch)


def _read_value(value: Value, batch: _Batch) -> None:
    if value.errors:
        log.warning("whatsapp.value_errors", codes=[_error_code(e) for e in value.errors])
    account = value.metadata.phone_number_id if value.metadata else None
    if not account or not (account.isascii() and account.isdigit()):
        # The account id becomes a Graph URL's path: only an id as WhatsApp writes it.
        items = len(value.messages) + len(value.statuses)
        if items:
            reason = "phone_number_id is not digits" if account else "no metadata.phone_number_id"
            batch.skip("value", _Unusable(reason), count=items)
        return
    contacts = _contacts(value.contacts)
    for raw_message in value.messages:
        try:
            batch.messages.append(_inbound(raw_message, account, contacts))
        except _ITEM_ERRORS as exc:
            batch.skip("message", exc, id=_item_id(raw_message))
    for raw_status in value.statuses:
        try:
            batch.statuses.append(_status(raw_status, account))
        except _ITEM_ERRORS as exc:
            batch.skip("status", exc, id=_item_id(raw_status))


def _contacts(raw_contacts: list[Any]) -> list[Contact]:
    # A malformed contact only costs a name, never the message it describes.
    contacts = []
    for raw in raw_contacts:
        try:
            contacts.append(Contact.model_validate(raw))
        except ValidationError:
            log.warning("whatsapp.contact_ignored")
    return contacts


# --- messages ------------------------------------------------------------------------------


def _inbound(raw: Any, account: str, contacts: list[Contact]) -> InboundMessage:
    message = Message.model_validate(raw)
    contact = _contact_for(message, contacts)
    user_id = message.from_user_id or (contact.user_id if contact else None) or None
    phone = message.from_ or (contact.wa_id if contact else None) or None
    if not (user_id or phone):
        raise _Unusable("message has neither from nor a user id")
    if phone is not None and not (phone.isascii() and phone.isdigit()):
        raise _Unusable("from (wa_id) is not digits")
    profile = contact.profile if contact else None
    kind = _kind(message, raw)
    return InboundMessage(
        channel=CHANNEL,
        account_external_id=account,
        channel_message_id=message.id,
        user_id=user_id,
        phone=phone,
        contact_name=profile.name if profile else None,
        contact_username=profile.username if profile else None,
        kind=kind,
        text=_TEXT_OF.get(kind, _no_text)(message),
        needs_reply=(message.type or kind) not in NO_REPLY_TYPES,
        timestamp=message.timestamp,
        payload=raw,
        reply_to=message.context.id if message.context else None,
        media=_media(message, kind),
    )


def _contact_for(message: Message, contacts: list[Contact]) -> Contact | None:
    for contact in contacts:
        if message.from_ and contact.wa_id == message.from_:
            return contact
        if message.from_user_id and contact.user_id == message.from_user_id:
            return contact
    # wa_id may be spelled differently from `from` (e.g. a country's mobile prefix).
    return contacts[0] if len(contacts) == 1 else None


def _kind(message: Message, raw: dict[str, Any]) -> str:
    if message.type:
        return message.type if message.type in KINDS else "unsupported"
    # Some senders omit `type`; the content key still says what it is.
    return next((kind for kind in KINDS if kind in raw), "unsupported")


def _no_text(message: Message) -> str | None:
    return None


def _plain_text(message: Message) -> str | None:
    return message.text.body if message.text else None


def _button_text(message: Message) -> str | None:
    return message.button.text if message.button else None


def _interactive_text(message: Message) -> str | None:
    return _describe_interactive(message.interactive) if message.interactive else None


def _location_text(message: Message) -> str | None:
    return _describe_location(message.location) if message.location else None


def _contacts_text(message: Message) -> str | None:
    return _describe_contacts(message.contacts) if message.contacts else None


def _caption(message: Message) -> str | None:
    content = next((c for k in _MEDIA_KINDS if (c := _media_content(message, k))), None)
    return (content.caption or None) if content else None


_MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")

_TEXT_OF: dict[str, Callable[[Message], str | None]] = {
    "text": _plain_text,
    "button": _button_text,
    "interactive": _interactive_text,
    "location": _location_text,
    "contacts": _contacts_text,
    # A file's caption is what the customer wrote with it; the file is in `media`.
    **{kind: _caption for kind in _MEDIA_KINDS},
}
"""How the agent reads each kind; kinds not listed (orders, reactions…) have no text."""


def _media_content(message: Message, kind: str) -> MediaContent | None:
    content = getattr(message, kind, None) if kind in _MEDIA_KINDS else None
    return content if isinstance(content, MediaContent) else None


def _media(message: Message, kind: str) -> tuple[Media, ...]:
    content = _media_content(message, kind)
    if content is None or not (content.id or content.url):
        return ()
    return (
        Media(
            kind=kind,
            media_id=content.id or None,
            url=content.url or None,
            mime_type=content.mime_type or None,
            caption=content.caption or None,
            filename=content.filename or None,
            voice=bool(content.voice),
        ),
    )


def _describe_interactive(interactive: Interactive) -> str | None:
    if interactive.button_reply and interactive.button_reply.title:
        return interactive.button_reply.title
    if interactive.list_reply and interactive.list_reply.title:
        reply = interactive.list_reply
        return f"{reply.title} — {reply.description}" if reply.description else reply.title
    if interactive.nfm_reply:
        flow = interactive.nfm_reply
        return flow.body or (f"[Form response: {flow.name}]" if flow.name else "[Form response]")
    return None


def _describe_location(location: Location) -> str:
    label = ", ".join(part for part in (location.name, location.address) if part)
    coordinates = (
        f"({location.latitude}, {location.longitude})"
        if location.latitude is not None and location.longitude is not None
        else ""
    )
    described = " ".join(part for part in (label, coordinates) if part)
    return f"[Location: {described}]" if described else "[Location]"


def _describe_contacts(raw_cards: list[Any]) -> str | None:
    cards = []
    for raw in raw_cards:
        try:
            card = SharedContact.model_validate(raw)
        except ValidationError:
            continue
        name = card.name
        label = (
            (name.formatted_name or " ".join(p for p in (name.first_name, name.last_name) if p))
            if name
            else ""
        )
        phones = ", ".join(p.phone or p.wa_id or "" for p in card.phones if p.phone or p.wa_id)
        described = f"{label} ({phones})" if label and phones else label or phones
        if described:
            cards.append(described)
    return f"[Contacts shared: {'; '.join(cards)}]" if cards else "[Contacts shared]"


# --- statuses ------------------------------------------------------------------------------


def _status(raw: Any, account: str) -> StatusUpdate:
    status = Status.model_validate(raw)
    return StatusUpdate(
        channel=CHANNEL,
        account_external_id=account,
        channel_message_id=status.id,
        status=status.status,
        timestamp=status.timestamp,
        recipient=status.recipient_id or status.recipient_user_id or None,
        errors=tuple(status.errors),
    )


# --- logging, without customer text --------------------------------------------------------


def _reason(exc: Exception | None) -> str | None:
    if exc is None:
        return None
    if isinstance(exc, ValidationError):
        # Only where and what kind: pydantic's own messages may quote the input.
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['type']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
    if isinstance(exc, _Unusable):
        return str(exc)
    return type(exc).__name__


def _item_id(raw: Any) -> str | None:
    item_id = raw.get("id") if isinstance(raw, dict) else None
    return item_id if isinstance(item_id, str) else None


def _error_code(error: Any) -> str | None:
    code = error.get("code") if isinstance(error, dict) else None
    return None if code is None else str(code)
