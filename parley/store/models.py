"""Parley's tables: the source of truth for every message, reply, token and cent.

The same schema runs on SQLite and PostgreSQL; Alembic migrations in `migrations/` create it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeAlias, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Id = BigInteger().with_variant(Integer(), "sqlite")
NO_ID_REUSE = {"sqlite_autoincrement": True}
"""SQLite gives a deleted row's id to the next insert unless AUTOINCREMENT is on: a new user
would inherit a deleted one's API account, a new contact a deleted one's identity."""

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine: SQLite stores no zone and hands back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class Account(Base):
    """A business number (WhatsApp phone_number_id), Instagram account or Facebook page.

    A row is made on first sight of a webhook (`configured` false: served with the environment's
    defaults while its channel has no configured account), or by `parley accounts add` and the
    admin API (`configured` true: its own credentials and settings). Removing a configured
    account keeps the row (`removed_at`), so its conversations and messages stay for audit.
    """

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("channel", "external_id"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(255))
    """The display name (the prompts' ``{{account}}``); None shows the external id."""
    access_token: Mapped[str | None] = mapped_column(Text)
    """Encrypted with PARLEY_SECRET_KEY; None means the environment's <CHANNEL>_ACCESS_TOKEN."""
    app_secret: Mapped[str | None] = mapped_column(Text)
    """Encrypted; the app secret that signs this account's webhooks when it is not the
    channel's default (META_APP_SECRET); None means the default."""
    verify_token: Mapped[str | None] = mapped_column(Text)
    """Encrypted; accepted in the webhook handshake besides META_VERIFY_TOKEN."""
    configured: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False: its webhooks are stored, never answered."""
    profile: Mapped[str | None] = mapped_column(String(64))
    """The agent profile that answers its conversations; None means ``default``."""
    model: Mapped[str | None] = mapped_column(String(128))
    """The model where the prompt version names none; None means OPENAI_MODEL."""
    send_rate: Mapped[float | None] = mapped_column(Float)
    """Messages per second it may send; None means the channel's default."""
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column()
    """Set by `parley accounts remove`: never answered again; its credentials are erased."""


class Contact(Base):
    """A customer of one account. Keyed by the channel's stable user id, else the phone."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("account_id", "external_id"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(160))
    user_id: Mapped[str | None] = mapped_column(String(160), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_contact_status", "contact_id", "status"),
        # The admin listing: latest activity first, the id breaking ties (its cursor's order).
        Index("ix_conversations_activity", "last_message_at", "id"),
        # Conversations with a person: few, read by the waiting list and the idle hand-back.
        Index("ix_conversations_mode", "mode", "mode_changed_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active`` or ``closed``; who answers an active one is its `mode`."""
    mode: Mapped[str] = mapped_column(String(16), default="agent", server_default="agent")
    """``agent`` (the agent answers) or ``human`` (a person does; the agent stays silent)."""
    assignee: Mapped[str | None] = mapped_column(String(128))
    """Who put it in its mode: an operator's user name, ``agent`` (the handoff tool), ``echo``
    (a person wrote from the channel's own app), ``idle`` (handed back after
    PARLEY_HANDOFF_IDLE_MINUTES); None before any change."""
    mode_changed_at: Mapped[datetime | None] = mapped_column()
    mode_reason: Mapped[str | None] = mapped_column(String(255))
    """Why it last changed mode (the handoff tool's reason, for instance)."""
    remote_conversation_id: Mapped[str | None] = mapped_column(String(128))
    last_response_id: Mapped[str | None] = mapped_column(String(128))
    last_input_tokens: Mapped[int | None] = mapped_column(Integer)
    """Input tokens of the last turn's last model call (the upstream context's size then);
    past PARLEY_CONTEXT_MAX_INPUT_TOKENS the next turn starts a fresh upstream context."""
    summary: Mapped[str | None] = mapped_column(Text)
    profile: Mapped[str | None] = mapped_column(String(64))
    """The agent profile that answers (the Responses API's `model`); None = the account's."""
    prompt_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    """The prompt version this conversation was assigned (sticky across an A/B test)."""
    handed_off_at: Mapped[datetime | None] = mapped_column()
    """When the agent's handoff tool (or a person writing from the channel's app) last handed
    it to a person; kept after a hand-back, for the prompts' handoff rate."""
    next_sequence_no: Mapped[int] = mapped_column(Integer, default=1)
    """The next message's sequence_no; bumped in the transaction that inserts messages."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_message_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    """The latest message's time (the creation time before any): the listing's order."""


@dataclass(frozen=True, slots=True)
class NewConversation:
    """What is read of a conversation the Responses API has just started (`new_thread`): the
    columns its prompt is chosen by, as a plain object, since nothing reads it from the
    session and an ORM object would keep books on each of its columns for nothing."""

    id: int
    channel: str
    profile: str | None
    prompt_version_id: int | None


AnyConversation: TypeAlias = Conversation | NewConversation
"""A conversation as a turn's prompt is chosen by: read from the store, or just started."""


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "sequence_no"),
        UniqueConstraint("account_id", "channel_message_id"),
        # The reconciler's and the worker's question: which inbound messages still wait?
        Index("ix_messages_status_created", "status", "created_at"),
        # A turn's read of its conversation's waiting messages, in order; whether more wait.
        Index("ix_messages_waiting", "conversation_id", "direction", "status", "sequence_no"),
        # The customer's rate window, and when the customer last wrote (each send's window).
        Index("ix_messages_inbound_time", "conversation_id", "direction", "created_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    sequence_no: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(8))
    """``in`` (from the customer) or ``out`` (to the customer)."""
    sender: Mapped[str] = mapped_column(String(16))
    """``customer``, ``agent``, ``operator``, ``system``, ``tool``."""
    kind: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    channel_message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    """In: ``received`` → ``answered`` | ``failed`` | ``ignored``.
    Out: ``queued`` → ``sent`` → ``delivered`` → ``read``, or ``failed``."""
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Turns started for this inbound message; past the limit it is dead-lettered."""
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    response_id: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 8))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    """The prompt version that produced this agent message (name and version via the join)."""
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Correlation id, x_context, fallback flags and other facts about the message."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Outbox(Base):
    """Outbound messages still to be sent: written with the reply, drained by delivery.

    Kept apart from `messages` so that delivery scans a small table, not the whole history.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HandoffNotice(Base):
    """A signed notice owed to PARLEY_HANDOFF_WEBHOOK_URL: written in the transaction that puts
    a conversation in human mode, posted by the worker's notifier off the turn's path, retried
    with backoff until it is accepted or its attempts run out (then kept, with `failed_at`)."""

    __tablename__ = "handoff_notices"
    __table_args__ = (Index("ix_handoff_notices_due", "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    assignee: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboxEntry(Base):
    """A signed webhook body as it arrived, committed before the channel got its 200.

    The filer turns rows into messages and statuses oldest first and deletes them in the same
    transaction; a row it cannot read stays, with `failed_at` and `error`, for audit.
    """

    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    correlation_id: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    failed_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)


class UsageSums:
    """What a usage row adds up: requests, tokens and cost (columns after the row's keys)."""

    requests: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0))


class UsageDaily(UsageSums, Base):
    """Requests, tokens and cost per day, account and model: what analytics and billing read,
    kept up to date in each turn's transaction instead of summing the messages table."""

    __tablename__ = "usage_daily"
    __table_args__ = (UniqueConstraint("day", "account_id", "model"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))


# --- prompts (Parley's own registry) --------------------------------------------------------


class Prompt(Base):
    """A named prompt; its text lives in numbered, immutable versions."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptVersion(Base):
    """One immutable version: instructions, model, model settings and variable defaults."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    instructions: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Model settings sent upstream: temperature, top_p, max_output_tokens, reasoning…"""
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Variable names with their default values."""
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptBinding(Base):
    """Which version answers for an agent profile, or for one account (which wins over its
    profile); optionally an A/B test against a candidate version."""

    __tablename__ = "prompt_bindings"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    profile: Mapped[str | None] = mapped_column(String(64), unique=True)
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id"))
    candidate_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    candidate_percent: Mapped[int] = mapped_column(Integer, default=0)
    """Share of new conversations (0–100) that get the candidate version."""
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_versions.id"))
    """The version active before this one: what a rollback returns to."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- users, tokens and secrets --------------------------------------------------------------


class User(Base):
    __tablename__ = "users"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active`` or ``suspended`` (its tokens are refused)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A bearer token, stored as its SHA-256 (tokens are random, so no slow hash is needed)
    with a short prefix that lets its owner recognise it."""

    __tablename__ = "api_tokens"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(24))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class UserSecret(Base):
    """A write-only secret of a user's (encrypted with PARLEY_SECRET_KEY) for their tools."""

    __tablename__ = "user_secrets"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageUserDaily(UsageSums, Base):
    """Requests, tokens and cost per day, user and model (the Responses API's callers)."""

    __tablename__ = "usage_user_daily"
    __table_args__ = (UniqueConstraint("day", "user_id", "model"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))


# --- the Responses API ----------------------------------------------------------------------


class ResponseRecord(Base):
    """One response of Parley's Responses API, owned by a user. Its messages are stored in
    `messages` like any channel's; this row keeps the API's view: request, output, status."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_responses_user_created", "user_id", "created_at"),
        # The sweeper's look for open responses whose process stopped renewing them.
        Index("ix_responses_open", "status", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    """``queued``, ``in_progress``, ``completed``, ``failed``, ``incomplete``, ``cancelled``."""
    profile: Mapped[str] = mapped_column(String(64))
    """The `model` the caller asked for: ``default`` or an agent profile's name."""
    model: Mapped[str | None] = mapped_column(String(128))
    """The upstream model that answered."""
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The normalised request: input items (with ids), instructions, tools, settings."""
    output: Mapped[list[Any]] = mapped_column(JSON, default=list)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    incomplete_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The caller's `metadata`, returned as given."""
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    upstream_response_id: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    """Renewed by the process running the turn while it is open (`responses.lease`); one left
    behind by PARLEY_RESPONSE_LEASE_SECONDS means that process died. None on rows made before
    it existed, which go by `created_at` instead."""


@dataclass(slots=True)
class NewResponse:
    """A response this process has just created, as a plain object with `ResponseRecord`'s
    columns: its row is inserted from it (`insert_response`), the caller's answer and the
    stream's events read it, and its turn sets the outcome on it. Nothing reads it from the
    session, so an ORM object would only keep books on every one of those steps."""

    id: str
    user_id: int
    conversation_id: int | None
    previous_response_id: str | None
    status: str
    profile: str
    request: dict[str, Any]
    output: list[Any]
    meta: dict[str, Any]
    background: bool
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    heartbeat_at: datetime | None
    model: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    upstream_response_id: str | None = None
    completed_at: datetime | None = None


AnyResponse: TypeAlias = ResponseRecord | NewResponse
"""A response as the API renders it: read from the store, or just created by this process."""


# --- retention and erasure ------------------------------------------------------------------


class UpstreamDeletion(Base):
    """An object Parley made upstream (an OpenAI conversation or stored response) that must go
    because its conversation expired or its customer was erased. Written in the transaction
    that deletes the local rows, drained by the workers with backoff; a 404 counts as done."""

    __tablename__ = "upstream_deletions"
    __table_args__ = (UniqueConstraint("kind", "object_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``conversation`` or ``response``."""
    object_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(16))
    """``retention``, ``erasure`` or ``orphan`` (made by a turn whose conversation went)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    locked_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Erasure(Base):
    """The audit record of one customer's erasure: who asked, when, and how much went. It holds
    no personal data: the contact's id was Parley's own, and the channel's id of the customer
    is kept only as a keyed one-way hash (so "was this number erased?" can be answered)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(128))
    """The admin user's name, ``_admin`` for PARLEY_ADMIN_TOKEN, or ``cli``."""
    contact_id: Mapped[int] = mapped_column(BigInteger, index=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(32))
    channel_id_hash: Mapped[str] = mapped_column(String(64), index=True)
    conversations: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    outbox: Mapped[int] = mapped_column(Integer, default=0)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    inbox: Mapped[int] = mapped_column(Integer, default=0)
    upstream: Mapped[int] = mapped_column(Integer, default=0)
    """Upstream objects queued for deletion."""


# --- Core handles -----------------------------------------------------------------------------
# The tables as Core sees them, for the statements the hot paths build once (no ORM entity).

ACCOUNTS = cast(Table, Account.__table__)
CONTACTS = cast(Table, Contact.__table__)
CONVERSATIONS = cast(Table, Conversation.__table__)
INBOX = cast(Table, InboxEntry.__table__)
MESSAGES = cast(Table, Message.__table__)
OUTBOX = cast(Table, Outbox.__table__)
RESPONSES = cast(Table, ResponseRecord.__table__)
