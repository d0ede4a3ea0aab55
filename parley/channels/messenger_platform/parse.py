"""A Messenger Platform webhook body (Messenger's ``page`` object, Instagram's ``instagram``)
→ `ParsedWebhook`: the customers' messages, the statuses of ours, and the other events.

Only a body that is not such a webhook at all is refused (`BadPayload`). Every entry and every
``messaging`` item is read on its own; one that cannot be read is logged (never with its text)
and counted in ``skipped``, and the rest still arrive. Items of a kind Parley does not act on
(referrals, opt-ins, handover) are passed over without counting as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from parley.channels.base import (
    ConversationEvent,
    EventKind,
    InboundMessage,
    Media,
    ParsedWebhook,
    StatusUpdate,
)
from parley.channels.messenger_platform.models import (
    Attachment,
    Entry,
    Envelope,
    Item,
    MessageBody,
    Postback,
)
from parley.channels.text import storable_json
from parley.errors import BadPayload

__all__ = ["LIKE_STICKERS", "SYNTHETIC_ID_PREFIX", "parse"]

log = structlog.get_logger(__name__)

_ITEM_ERRORS = (ValidationError, KeyError, ValueError, TypeError)

SYNTHETIC_ID_PREFIX = "parley:"
"""Ids Parley makes up for what the channel gives no message id of its own (postbacks): unique
per account all the same, so a redelivery is still recognised; never sent back to Meta."""

LIKE_STICKERS = frozenset({"369239263222822", "369239343222814", "369239383222810"})
"""Messenger's thumbs-up "like" in its three sizes: an acknowledgement, like a reaction."""

FILE_KINDS = {"image": "image", "video": "video", "audio": "audio", "file": "file"}
"""Attachment types that are files to download, as `Media.kind` names them."""

LINK_TEXT = {
    "share": "[Shared a post]",
    "story_mention": "[Mentioned you in their story]",
    "ig_reel": "[Shared a reel]",
    "reel": "[Shared a reel]",
    "ig_post": "[Shared a post]",
    "fallback": "[Shared a link]",
}
"""What the agent reads for an attachment that links to a post rather than carrying a file."""


class _Unusable(ValueError):
    """An item that parsed but cannot be filed; its text is safe to log."""


@dataclass
class _Batch:
    channel: str
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    events: list[ConversationEvent] = field(default_factory=list)
    skipped: int = 0

    def skip(self, item: str, exc: Exception | None = None, **where: Any) -> None:
        self.skipped += 1
        log.warning(f"{self.channel}.item_skipped", item=item, reason=_reason(exc), **where)

    def result(self) -> ParsedWebhook:
        return ParsedWebhook(
            messages=self.messages,
            statuses=self.statuses,
            skipped=self.skipped,
            events=self.events,
        )


@dataclass(frozen=True, slots=True)
class _Where:
    """An item's place: the channel, our account (the entry's id) and when it happened."""

    channel: str
    account: str
    timestamp: datetime


def parse(body: bytes, *, channel: str, webhook_object: str) -> ParsedWebhook:
    """Every message, status and event in `body`, in order.

    Args:
        channel: the channel name the values are stamped with.
        webhook_object: the ``object`` the channel's webhooks carry (``page``, ``instagram``).
    """
    batch = _Batch(channel)
    for raw_entry in _envelope(body, webhook_object).entry:
        _read_entry(raw_entry, batch)
    return batch.result()


def _envelope(body: bytes, webhook_object: str) -> Envelope:
    try:
        # A NUL or lone surrogate escape must not cost the batch its filing.
        data = storable_json(body)
    except (ValueError, RecursionError) as exc:
        raise BadPayload("body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadPayload("body is not a JSON object")
    if data.get("object") not in (None, webhook_object):
        raise BadPayload(f"object is not {webhook_object}")
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        raise BadPayload("entry is not a list") from exc


def _read_entry(raw: Any, batch: _Batch) -> None:
    try:
        entry = Entry.model_validate(raw)
        if not entry.id:
            raise _Unusable("entry has no id")
        if not (entry.id.isascii() and entry.id.isdigit()):
            # Our account's id becomes a Graph URL's path: only an id as Meta writes it.
            raise _Unusable("entry id is not digits")
    except _ITEM_ERRORS as exc:
        batch.skip("entry", exc)
        return
    if entry.standby:
        log.info(f"{batch.channel}.standby_ignored", items=len(entry.standby))
    for raw_item in entry.messaging:
        try:
            _read_item(raw_item, entry, batch)
        except _ITEM_ERRORS as exc:
            batch.skip("messaging", exc, account=entry.id)


def _read_item(raw: Any, entry: Entry, batch: _Batch) -> None:
    item = Item.model_validate(raw)
    assert entry.id is not None
    when = item.timestamp or entry.time or datetime.now(UTC)
    where = _Where(batch.channel, entry.id, when)
    user = _customer(item, where.account, echo=False)
    if item.message is not None:
        _read_message(item, item.message, raw, where, batch)
    elif item.postback is not None:
        batch.messages.append(_postback(user, item.postback, raw, where))
    elif item.message_edit is not None:
        edit = item.message_edit
        batch.events.append(_event(where, "edit", _required(edit.mid), user, raw, text=edit.text))
    elif item.reaction is not None:
        reaction = item.reaction
        taken_back = reaction.action == "unreact"
        emoji = None if taken_back else (reaction.emoji or reaction.reaction or "")
        batch.events.append(
            _event(where, "reaction", _required(reaction.mid), user, raw, reaction=emoji)
        )
    elif item.read is not None:
        read = item.read
        if not (read.mid or read.watermark):
            raise _Unusable("read names neither a message nor a watermark")
        batch.events.append(_event(where, "read", read.mid, user, raw, watermark=read.watermark))
    elif item.delivery is not None:
        for mid in item.delivery.mids:
            batch.statuses.append(
                StatusUpdate(where.channel, where.account, mid, "delivered", when, user)
            )
    else:
        # Referrals, opt-ins, handover, policy notices…: nothing to file.
        kinds = [key for key in raw if key not in ("sender", "recipient", "timestamp")]
        log.info(f"{batch.channel}.item_ignored", kinds=kinds[:3])


def _read_message(
    item: Item, message: MessageBody, raw: dict[str, Any], where: _Where, batch: _Batch
) -> None:
    mid = _required(message.mid, "message has no mid")
    if message.is_echo:
        user = _customer(item, where.account, echo=True)
        media = _media(message.attachments)
        echo = _event(where, "echo", mid, user, raw, text=message.text, media=media)
        batch.events.append(echo)
    elif message.is_deleted:
        user = _customer(item, where.account, echo=False)
        batch.events.append(_event(where, "delete", mid, user, raw))
    else:
        batch.messages.append(_inbound(item, message, raw["message"], where))


def _event(
    where: _Where,
    kind: EventKind,
    mid: str | None,
    user: str | None,
    raw: dict[str, Any],
    **fields: Any,
) -> ConversationEvent:
    return ConversationEvent(
        channel=where.channel,
        account_external_id=where.account,
        kind=kind,
        channel_message_id=mid,
        user_id=user,
        timestamp=where.timestamp,
        payload=raw,
        **fields,
    )


# --- what a customer wrote -----------------------------------------------------------------


def _inbound(
    item: Item, message: MessageBody, raw: dict[str, Any], where: _Where
) -> InboundMessage:
    user = _customer(item, where.account, echo=False)
    if not user:
        raise _Unusable("message has no sender")
    attachments = [a for raw in message.attachments if (a := _attachment(raw)) is not None]
    story = message.reply_to.story if message.reply_to else None
    kind = _kind(message, attachments, story is not None)
    media = _media(message.attachments)
    if story is not None and story.url:
        media += (Media(kind="story", url=story.url),)
    return InboundMessage(
        channel=where.channel,
        account_external_id=where.account,
        channel_message_id=_required(message.mid),
        user_id=user,
        phone=None,
        contact_name=None,
        contact_username=None,
        kind=kind,
        text=_text(message, attachments, kind),
        needs_reply=not _acknowledgement(attachments),
        timestamp=where.timestamp,
        payload=raw,
        reply_to=message.reply_to.mid if message.reply_to else None,
        media=media,
    )


def _postback(
    user: str | None, postback: Postback, raw: dict[str, Any], where: _Where
) -> InboundMessage:
    if not user:
        raise _Unusable("postback has no sender")
    text = postback.title or postback.payload
    if not text:
        raise _Unusable("postback has neither title nor payload")
    # A postback's own mid (Instagram, Messenger since v11) cannot be replied to, and some
    # carry none; an id of Parley's keeps the redelivery check either way.
    source = postback.mid or f"{user}:{int(where.timestamp.timestamp() * 1000)}"
    return InboundMessage(
        channel=where.channel,
        account_external_id=where.account,
        channel_message_id=f"{SYNTHETIC_ID_PREFIX}postback:{source}",
        user_id=user,
        phone=None,
        contact_name=None,
        contact_username=None,
        kind="postback",
        text=text,
        needs_reply=True,
        timestamp=where.timestamp,
        payload=raw,
    )


def _kind(message: MessageBody, attachments: list[Attachment], story_reply: bool) -> str:
    if message.is_unsupported:
        return "unsupported"
    if story_reply:
        return "story_reply"
    if message.quick_reply is not None:
        return "quick_reply"
    if message.text:
        return "text"
    if not attachments:
        return "unsupported"
    first = attachments[0]
    if _is_sticker(first) or first.type == "like_heart":
        return "sticker"
    return str(first.type or "unsupported")


def _text(message: MessageBody, attachments: list[Attachment], kind: str) -> str | None:
    """What the agent reads: the text, a quick reply's payload when it has no text, or a short
    description of a link; None for files (the agent is told it cannot open them)."""
    if kind == "story_reply":
        return f"[Replying to your story] {message.text}" if message.text else None
    if message.text:
        return message.text
    if message.quick_reply is not None and message.quick_reply.payload:
        return message.quick_reply.payload
    for attachment in attachments:
        if attachment.type == "like_heart":
            return "❤️"
        if attachment.type in ("ig_reel", "reel") and _title(attachment):
            return f"[Shared a reel: {_title(attachment)}]"
        if attachment.type in LINK_TEXT:
            return LINK_TEXT[attachment.type]
    return None


def _acknowledgement(attachments: list[Attachment]) -> bool:
    """A heart or a thumbs-up alone: like a reaction, nobody waits for an answer to it."""
    return bool(attachments) and all(
        a.type == "like_heart" or str((a.payload or {}).get("sticker_id")) in LIKE_STICKERS
        for a in attachments
    )


def _media(raw_attachments: list[Any]) -> tuple[Media, ...]:
    media = []
    for raw in raw_attachments:
        attachment = _attachment(raw)
        if attachment is None:
            continue
        url = (attachment.payload or {}).get("url") or attachment.url
        if not isinstance(url, str) or not url:
            continue  # a like_heart, an ephemeral photo: nothing to fetch
        kind = "sticker" if _is_sticker(attachment) else attachment.type
        kind = FILE_KINDS.get(str(kind), str(kind or "file"))
        media.append(Media(kind=kind, url=url, caption=_title(attachment)))
    return tuple(media)


def _attachment(raw: Any) -> Attachment | None:
    # One odd attachment costs only itself, never its message.
    try:
        return Attachment.model_validate(raw)
    except ValidationError:
        log.warning("messenger_platform.attachment_ignored")
        return None


def _is_sticker(attachment: Attachment) -> bool:
    return bool((attachment.payload or {}).get("sticker_id"))


def _title(attachment: Attachment) -> str | None:
    title = (attachment.payload or {}).get("title") or attachment.title
    return title if isinstance(title, str) and title else None


# --- who is who ------------------------------------------------------------------------------


def _customer(item: Item, account: str, *, echo: bool) -> str | None:
    """The customer's id: the sender of what they send, the recipient of an echo of ours. Some
    captured echoes name the two the other way round, so an echo's recipient that is our own
    account means its sender is the customer."""
    sender = item.sender.id if item.sender else None
    recipient = item.recipient.id if item.recipient else None
    if not echo:
        return sender or None
    if recipient and recipient != account:
        return recipient
    return sender if sender and sender != account else None


def _required(value: str | None, reason: str = "event has no mid") -> str:
    if not value:
        raise _Unusable(reason)
    return value


# --- logging, without customer text ----------------------------------------------------------


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
