"""What a channel is to the rest of Parley: the `Channel` interface, and the plain, frozen
values that cross it (facts parsed from a webhook, who a reply goes to, a text limit).

A channel package turns its webhook bodies into these and knows how to send a reply; nothing
above `channels/` sees a channel's own payload shapes, and no channel sees a database row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx

from parley.channels.signature import hub_challenge, verify_request
from parley.channels.text import CHARACTERS, Measure, split_text
from parley.config import Settings
from parley.errors import ChannelSendError


@dataclass(frozen=True, slots=True)
class Media:
    """A file a customer sent, as the channel names it; downloaded only when a turn needs it."""

    kind: str
    """``image``, ``audio``, ``video``, ``document``, ``sticker``, ``file``; and links to a post
    rather than files, which Instagram sends: ``share``, ``ig_reel``, ``reel``,
    ``story_mention`` and ``story`` (the story a customer replied to)."""
    media_id: str | None = None
    """The channel's media id, fetched through its API (WhatsApp)."""
    url: str | None = None
    """A direct URL on the channel's CDN (Instagram and Messenger attachments)."""
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool = False
    """A voice note recorded in the app, as opposed to an audio file."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A customer's file, fetched within Parley's limits (`channels.download`)."""

    data: bytes = field(repr=False)
    content_type: str
    """The file's type as checked: ``image/jpeg``, ``audio/ogg``…, without parameters."""


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
    """The channel's stable user id (WhatsApp BSUID ``CC.…``, Instagram IGSID, Messenger PSID),
    when present."""
    phone: str | None
    """The customer's phone number (WhatsApp ``wa_id``/``from``), when present."""
    contact_name: str | None
    contact_username: str | None
    kind: str
    """``text``, ``image``, ``audio``, ``video``, ``document``, ``sticker``, ``location``,
    ``contacts``, ``interactive``, ``button``, ``reaction``, ``order``, ``system``,
    ``unsupported``; Messenger and Instagram add ``quick_reply``, ``postback``, ``file``,
    ``story_reply``, ``story_mention``, ``share``, ``ig_reel`` and ``reel``."""
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
    media: tuple[Media, ...] = ()
    """Files attached to the message, in the order the channel listed them."""

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


EventKind = Literal["echo", "edit", "delete", "reaction", "read"]


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """Something that happened in a conversation other than a customer writing a new message.
    It is filed (a message changed, stored or marked), never answered.

    What `kind` says, and the fields it uses besides the account and the customer:

    - ``echo``: the business sent `channel_message_id` to the customer, with `text` and
      `media`: either Parley's own send coming back, or a person answering from the channel's
      app (then the agent steps back from the conversation).
    - ``edit``: the customer changed their message `channel_message_id`; `text` is the new text,
      None when the channel did not say.
    - ``delete``: the customer unsent their message `channel_message_id`.
    - ``reaction``: the customer reacted to `channel_message_id` with `reaction` (an emoji, else
      the channel's name for it), or took their reaction back (`reaction` None).
    - ``read``: the customer read `channel_message_id` and what came before it, or everything
      sent to them up to `watermark` (Messenger names no message).
    """

    channel: str
    account_external_id: str
    kind: EventKind
    channel_message_id: str | None
    """The message the event is about (for an echo, the message itself)."""
    user_id: str | None
    """The customer (IGSID, PSID); None when the channel left it out, as Instagram's reads
    and edits sometimes do: the message id then says whose it was."""
    timestamp: datetime
    text: str | None = None
    reaction: str | None = None
    watermark: datetime | None = None
    media: tuple[Media, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)
    """The channel's raw event, stored for audit."""


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """Everything one webhook POST carried; items that could not be read are counted, not fatal."""

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    skipped: int = 0
    events: list[ConversationEvent] = field(default_factory=list)
    """What is not a new message: echoes, edits, deletions, reactions, reads, in order."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The channel accepted a message: its id for status tracking."""

    channel_message_id: str | None


@dataclass(frozen=True, slots=True)
class TextLimit:
    """The longest text one message may carry, counted as the channel counts it."""

    size: int
    measure: Measure = CHARACTERS


@dataclass(frozen=True, slots=True)
class Target:
    """Who a send goes to and on whose behalf, copied from the store's rows by delivery."""

    account_external_id: str
    """The business side, as in `InboundMessage.account_external_id`."""
    phone: str | None
    user_id: str | None
    """The customer, as stored (a read receipt on Messenger and Instagram is addressed to them);
    both None only when the customer is not known."""
    token: str = field(repr=False)
    """The access token to send with; never logged, never put in an error."""
    tag: str | None = None
    """A message tag for a send outside the channel's standard window (Messenger and
    Instagram ``HUMAN_AGENT``); None for an ordinary reply."""
    account_settings: Mapping[str, Any] = field(default_factory=dict)
    """The account's own settings, over the environment's where a channel reads them (such as
    how an Instagram account is connected: ``instagram_setup``, ``page_id``)."""


@dataclass(frozen=True, slots=True)
class ReplyWindow:
    """How long after a customer's last message the business may still write to them."""

    standard: timedelta
    """Any reply, the agent's or an operator's, within this long."""
    human_agent: timedelta | None = None
    """An operator's reply (sent tagged ``HUMAN_AGENT``) within this long; None: no such tag."""


META_WINDOW = ReplyWindow(timedelta(hours=24))
"""WhatsApp's customer-service window: after 24 hours only templates."""
META_WINDOW_WITH_HUMAN_AGENT = ReplyWindow(timedelta(hours=24), human_agent=timedelta(days=7))
"""Messenger's and Instagram's: 24 hours, and 7 days for a person's reply tagged HUMAN_AGENT."""


SendFailure = httpx.Response | httpx.HTTPError | httpx.InvalidURL
"""What a send can end in besides success: the channel's error answer, or no answer at all."""


class Channel(ABC):
    """One messaging channel: its webhooks in, its messages out.

    One instance is registered per process and shared by every app in it, so what differs
    between calls comes in as arguments: the settings, the HTTP client, the target.
    """

    name: ClassVar[str]
    """The registry key, the ``/webhooks/{name}`` path and the stored ``channel`` column."""
    text_limit: ClassVar[TextLimit]
    reply_window: ClassVar[ReplyWindow | None] = None
    """How long after the customer's last message a reply may go out; None for no limit.
    Delivery sends nothing outside it (`META_WINDOW`, `META_WINDOW_WITH_HUMAN_AGENT`)."""
    secret_settings: ClassVar[tuple[str, ...]] = ("meta_app_secret",)
    """The settings holding the secret `verify` checks webhooks with, any one of which will
    do, the first the one to name when none is set: Meta's app secret unless the channel says
    otherwise. A channel that answers from the environment needs one (`parley.readiness`)."""

    # --- webhooks in ------------------------------------------------------------------
    @abstractmethod
    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> None:
        """Check that the raw `body` was signed by the channel.

        Raises:
            WebhookNotConfigured: the secret to check with is not set.
            BadSignature: the signature is missing or wrong.
        """

    @abstractmethod
    def handshake(self, params: Mapping[str, str], settings: Settings) -> str | None:
        """The text to answer a subscription check (GET) with, or None to refuse it."""

    def verify_with(self, body: bytes, headers: Mapping[str, str], secret: str) -> None:
        """Check the raw `body`'s signature with one account's own app secret, for accounts
        whose Meta app is not the channel's default. Meta's channels all sign with
        ``X-Hub-Signature-256``; a channel that signs otherwise overrides this.

        Raises:
            BadSignature: the signature is missing or wrong.
        """
        verify_request(body, headers, secret)

    def handshake_with(self, params: Mapping[str, str], verify_token: str) -> str | None:
        """As `handshake`, with one account's own verify token."""
        return hub_challenge(params, verify_token)

    @abstractmethod
    def parse(self, body: bytes) -> ParsedWebhook:
        """Every message and status a verified body carries; items that cannot be read are
        skipped and counted. Raises `BadPayload` only when the body is not this channel's."""

    # --- text ---------------------------------------------------------------------------
    def format(self, text: str) -> str:
        """The agent's Markdown in the channel's own formatting; plain text by default."""
        return text

    def render(self, text: str) -> list[str]:
        """The messages to send for one answer, in order: formatted, each within the limit."""
        return split_text(self.format(text), self.text_limit.size, self.text_limit.measure)

    # --- messages out -----------------------------------------------------------------
    @abstractmethod
    async def send_text(
        self,
        client: httpx.AsyncClient,
        target: Target,
        text: str,
        *,
        reply_to: str | None,
        settings: Settings,
        timeout: float,
    ) -> SendResult:
        """Send one message, once (delivery owns retries).

        Raises:
            ChannelSendError: saying whether trying again may help (see `classify_error`).
        """

    @abstractmethod
    async def mark_read(
        self,
        client: httpx.AsyncClient,
        target: Target,
        message_id: str,
        *,
        settings: Settings,
        timeout: float,
    ) -> None:
        """Show the customer `message_id` was read and a reply is being typed.

        Raises:
            ChannelSendError: as `send_text`; the caller treats it as best effort.
        """

    # --- media in ---------------------------------------------------------------------
    async def media_url(
        self,
        client: httpx.AsyncClient,
        media: Media,
        *,
        token: str | None,
        settings: Settings,
        timeout: float,
    ) -> str | None:
        """Where `media` can be downloaded: its attachment URL by default (Instagram,
        Messenger). A channel whose webhooks carry media ids (WhatsApp) asks its API here.
        `channels.download.fetch_media` checks the host and downloads within the limits.

        Raises:
            MediaUnavailable: the channel's API would not say (unknown id, expired, refused).
        """
        return media.url

    @abstractmethod
    def classify_error(self, failure: SendFailure, *, token: str) -> ChannelSendError:
        """A failed call as an error that says whether it is retryable, when to retry, and why
        (with `token` redacted from anything the channel quoted back)."""

    def classify_status(self, errors: Sequence[Mapping[str, Any]]) -> ChannelSendError:
        """The errors of a ``failed`` status report on a sent message, as `classify_error` would
        have called them in the send's answer; by default final, with the channel's words.
        Meta's channels use `graph_errors.status_error`."""
        first = errors[0] if errors else {}
        reason = first.get("title") or first.get("message") or "failed, no reason given"
        return ChannelSendError(f"{self.name} reported: {reason}"[:300], retryable=False)
