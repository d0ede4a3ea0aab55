"""Settings: Parley's environment (docs/configuration.md), read once by the CLI and passed down.

Nothing reads the environment at import time, so tests build their own `Settings(...)`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise customer-service assistant for this business. "
    "Answer in the customer's language, keep replies short enough for a chat app, "
    "and say so honestly when you do not know something."
)
DEFAULT_FALLBACK_REPLY = (
    "Sorry, we can't answer right now. We've noted your message and will get back to you soon."
)
DEFAULT_RATE_LIMIT_REPLY = (
    "You're sending messages faster than we can read them. Please wait a minute; "
    "we'll answer what you wrote."
)
DEFAULT_MODERATION_REPLY = "Sorry, I can't help with that. Is there anything else I can do?"
DEFAULT_UNSUPPORTED_REPLY = (
    "Thanks! I can only read text messages for now. Could you type your question?"
)


ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}
"""The drivers Parley runs on, for URLs written without one: the form hosting providers and
`psql` print (SQLAlchemy would pick psycopg2 or the synchronous sqlite3, neither usable here)."""


def async_database_url(url: str) -> str:
    """`url` with the async driver Parley uses when it names none: ``postgres://`` and
    ``postgresql://`` become ``postgresql+asyncpg://``, ``sqlite://`` ``sqlite+aiosqlite://``.
    The rest is kept as written, so an encoded password stays encoded."""
    scheme, separator, rest = url.strip().partition("://")
    driver = ASYNC_DRIVERS.get(scheme.lower())
    return f"{driver}{separator}{rest}" if separator and driver else url.strip()


class Settings(BaseSettings):
    """Every setting is an environment variable named as the field in upper case (no prefix, no
    aliases; case-insensitive), also read from `.env`. Each `description` is the user-facing
    reference: `python -m parley.config_reference` renders docs/configuration.md and
    .env.example from them."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # Upstream LLM (OpenAI Responses API or any compatible server).
    openai_api_key: SecretStr | None = Field(
        default=None, description="Key for the upstream Responses API."
    )
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Upstream base URL, ending in `/v1` (a trailing slash is dropped).",
    )
    openai_prompt_id: str | None = Field(
        default=None,
        description="Dashboard prompt id sent as `prompt.id` (instead of model and "
        "instructions), with `OPENAI_PROMPT_VERSION`; if the upstream no longer has it, the "
        "turn is answered with Parley's own active prompt and `agent.prompt_fallback` is logged.",
    )
    openai_prompt_version: str | None = Field(
        default=None, description="Version of `OPENAI_PROMPT_ID` to use; unset for its latest."
    )
    openai_model: str = Field(
        default="gpt-5-mini",
        description="Model for the agent (a prompt version may name its own).",
    )
    openai_timeout: int = Field(
        default=30_000, gt=0, description="Upstream request timeout, in milliseconds."
    )
    openai_max_retries: int = Field(
        default=3, ge=0, description="Upstream retries (429, 5xx, timeouts), with backoff."
    )
    openai_max_concurrency: int = Field(
        default=32, ge=1, description="Upstream calls in flight at once; more wait their turn."
    )
    openai_rpm: int | None = Field(
        default=None,
        ge=1,
        description="Client-side cap on upstream requests per minute (calls are spaced evenly "
        "and wait, never fail); unset for no cap.",
    )
    openai_tpm: int | None = Field(
        default=None,
        ge=1,
        description="Client-side cap on upstream tokens per minute (estimated as chars / 4 "
        "before a call, corrected with the real usage); unset for no cap.",
    )

    # The agent.
    parley_instructions: str = Field(
        default=DEFAULT_INSTRUCTIONS,
        description="The built-in prompt's instructions (used where no prompt version is "
        "active): text, or `@path` to a file; may hold `{{variables}}`.",
    )
    parley_fallback_reply: str = Field(
        default=DEFAULT_FALLBACK_REPLY,
        description="What a customer gets when the agent cannot answer.",
    )
    parley_unsupported_reply: str = Field(
        default=DEFAULT_UNSUPPORTED_REPLY,
        description="What a customer gets when nothing they sent can be read or described "
        "to the agent (an unsupported message type, an order).",
    )
    parley_rate_limit_reply: str = Field(
        default=DEFAULT_RATE_LIMIT_REPLY,
        description="The notice a customer over `PARLEY_CUSTOMER_MESSAGES_PER_MINUTE` gets, "
        "once a minute.",
    )
    parley_customer_messages_per_minute: int = Field(
        default=20,
        ge=1,
        description="Messages one customer may send per minute; the rest are stored as "
        "`ignored` and the customer gets one notice (`PARLEY_RATE_LIMIT_REPLY`) a minute.",
    )
    parley_max_input_chars: int = Field(
        default=4000,
        ge=1,
        description="Longest customer text sent to the model (the stored text is whole).",
    )
    parley_moderation: bool = Field(
        default=False,
        description="Check customer text with the upstream's moderation endpoint "
        "(`omni-moderation-latest`) first; flagged text gets `PARLEY_MODERATION_REPLY` and "
        "never reaches the model.",
    )
    parley_moderation_reply: str = Field(
        default=DEFAULT_MODERATION_REPLY,
        description="The refusal for text that moderation flagged.",
    )
    parley_redact_cards: bool = Field(
        default=True,
        description="Mask payment card numbers (Luhn-valid, 13 to 19 digits) in what is sent "
        "to the model (the stored text keeps them).",
    )
    parley_context: Literal["conversation", "previous_response", "local"] = Field(
        default="conversation",
        description="How the agent remembers: `conversation` (one OpenAI conversation per "
        "customer, only new input sent), `previous_response` (chain on the last response id), "
        "or `local` (Parley sends the history from its own store, older turns summarised; for "
        "OpenAI-compatible servers without server-side state).",
    )
    parley_context_tokens: int = Field(
        default=8000,
        gt=0,
        description="History budget in tokens (estimated as chars / 4) that the `local` "
        "strategy sends, and that a new remote conversation or chain is seeded with after the "
        "upstream lost the old one.",
    )
    parley_context_max_input_tokens: int = Field(
        default=24000,
        ge=0,
        description="Pruning for `conversation` and `previous_response`: once a turn's input "
        "(the upstream's `usage.input_tokens`) passes this many tokens, the next turn starts a "
        "fresh upstream conversation or chain, seeded with a summary of the older turns and "
        "the recent ones, so a long chat's turns cost no more than a short one's. 0 disables "
        "it (the upstream context then grows with the chat).",
    )

    parley_tools: str | None = Field(
        default=None,
        description="Function tools for the agent besides the built-in ones: a JSON list (or "
        '`@path`) of `{"name", "description", "parameters": <JSON schema>, "python": '
        '"pkg.module:function"}` or `{…, "http": {"url", "method", "headers"}}`, each with an '
        'optional `"timeout"` (seconds).',
    )
    parley_builtin_tools: str = Field(
        default="handoff_to_human,current_time",
        description="Built-in tools the agent may use, comma-separated (empty for none): "
        "`handoff_to_human` (the conversation goes to a person and the agent stops answering "
        "it), `current_time`.",
    )
    parley_max_tool_steps: int = Field(
        default=5, ge=0, description="Function-calling rounds in one turn."
    )
    parley_timezone: str = Field(
        default="UTC",
        description="The business's IANA time zone, for `current_time` and the prompts' "
        "`{{local_time}}`.",
    )
    parley_prices: str | None = Field(
        default=None,
        description="Model prices in USD per 1M tokens over the built-in OpenAI list prices "
        "(gpt-5, gpt-5-mini, gpt-5-nano, gpt-4.1*, gpt-4o*): JSON "
        '`{"model": {"input": 0.25, "cached_input": 0.025, "output": 2}}` or `@path` to such '
        "a file.",
    )

    # Store and queue.
    database_url: str = Field(
        default="sqlite+aiosqlite:///./parley.db",
        description="URL of the database: `sqlite:///path` or `postgresql://user:password@host/db` "
        "(`postgres://` too); Parley picks the async driver (`sqlite+aiosqlite`, "
        "`postgresql+asyncpg`) when the URL names none.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the distributed queue and the shared API rate limit; unset for "
        "the in-process queue (one process).",
    )

    # Meta.
    meta_app_secret: SecretStr | None = Field(
        default=None,
        description="The Meta app secret that signs webhooks (an account added with its own "
        "app secret is checked with that instead); unset, webhooks are refused unless signed "
        "with an account's own.",
    )
    meta_verify_token: SecretStr | None = Field(
        default=None,
        description="Any string you choose, for the webhook GET handshake (accounts' own verify "
        "tokens are accepted too); unset, the handshake is refused unless one matches.",
    )
    graph_api_base_url: str = Field(
        default="https://graph.facebook.com", description="Graph API base URL."
    )
    graph_api_version: str = Field(default="v26.0", description="Graph API version.")
    instagram_api_base_url: str = Field(
        default="https://graph.instagram.com",
        description="Instagram API base URL: sends of Instagram accounts connected with "
        "Instagram Login go to `{INSTAGRAM_API_BASE_URL}/{GRAPH_API_VERSION}/{account id}"
        "/messages`.",
    )
    instagram_app_secret: SecretStr | None = Field(
        default=None,
        description="The Instagram app secret (App Dashboard, Instagram product settings) that "
        "signs Instagram Login webhooks; an Instagram webhook is accepted when it verifies with "
        "this or `META_APP_SECRET` (Facebook-page setups sign with that). Unset: "
        "`META_APP_SECRET` only.",
    )
    instagram_setup: Literal["instagram_login", "facebook_page"] = Field(
        default="instagram_login",
        description="How the Instagram account is connected: `instagram_login` (Instagram API "
        "with Instagram Login: sends through `INSTAGRAM_API_BASE_URL` with an Instagram user "
        "token) or `facebook_page` (linked to a Facebook page: sends through "
        "`GRAPH_API_BASE_URL` to the page, with the page's token in "
        "`INSTAGRAM_ACCESS_TOKEN`). An account's own `instagram_setup` setting wins.",
    )
    instagram_page_id: str | None = Field(
        default=None,
        description="With `INSTAGRAM_SETUP=facebook_page`: the id of the Facebook page the "
        "Instagram account is linked to, which sends go to; unset, they go to `/me/messages`, "
        "the page the token belongs to. An account's own `page_id` setting wins.",
    )
    whatsapp_access_token: SecretStr | None = Field(
        default=None,
        description="Access token for sending on WhatsApp (a system user token in production), "
        "for numbers without a token of their own (`parley accounts`).",
    )
    instagram_access_token: SecretStr | None = Field(
        default=None,
        description="Access token for sending on Instagram: an Instagram user token with "
        "Instagram Login, the linked page's token with `INSTAGRAM_SETUP=facebook_page`.",
    )
    messenger_access_token: SecretStr | None = Field(
        default=None,
        description="Page access token for sending on Messenger (every page without a token of "
        "its own).",
    )
    graph_timeout: float = Field(
        default=15.0, gt=0, description="Timeout of one Graph API call, in seconds."
    )

    # Media customers send.
    parley_media_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest file downloaded from a channel (an image for the model, a voice "
        "note to transcribe), in bytes; enforced while it streams in, and larger files are "
        "described to the agent as not loaded.",
    )
    parley_media_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds one file may take to download, its URL lookup included.",
    )
    parley_media_concurrency: int = Field(
        default=8,
        ge=1,
        description="Files downloaded or transcribed at once per process.",
    )
    parley_transcribe: bool = Field(
        default=False,
        description="Transcribe voice notes and audio with the upstream's audio API "
        "(`/v1/audio/transcriptions`) and answer them like text; off, the agent is told the "
        "customer sent a voice note it cannot listen to.",
    )
    parley_transcribe_model: str = Field(
        default="gpt-4o-mini-transcribe",
        description="Model for `PARLEY_TRANSCRIBE` (`gpt-4o-transcribe`, `whisper-1`, …).",
    )
    graph_max_attempts: int = Field(
        default=6,
        ge=1,
        description="Tries per outbound message before it is marked `failed`; a message the "
        "channel reports failed later (a status webhook) is sent again at most this many times "
        "minus one.",
    )
    parley_whatsapp_send_rate: float = Field(
        default=80,
        ge=0,
        description="Messages per second one WhatsApp number sends at most (Meta's default "
        "throughput; raise it for a number Meta upgraded to 1,000), shared by every process "
        "through Redis when `REDIS_URL` is set; an account's `send_rate` setting wins; `0` for "
        "no limit.",
    )
    parley_messenger_send_rate: float = Field(
        default=300,
        ge=0,
        description="Messages per second one Facebook page sends at most on Messenger (the Send "
        "API's documented 300 a second for text); as `PARLEY_WHATSAPP_SEND_RATE`.",
    )
    parley_instagram_send_rate: float = Field(
        default=300,
        ge=0,
        description="Messages per second one Instagram account sends at most (300 a second for "
        "text, as documented for the Messenger API for Instagram); as "
        "`PARLEY_WHATSAPP_SEND_RATE`.",
    )

    # Admin and secrets.
    parley_admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin API (an admin user's token opens it too); on "
        "`/v1` it acts as the built-in admin user `_admin`.",
    )
    parley_secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts stored secrets: users' secrets and accounts' tokens and "
        "app secrets (unset, storing one is refused); "
        "also keys the customer hash sent upstream as `safety_identifier` (`META_APP_SECRET` "
        "when unset).",
    )
    parley_api_rate_limit: int = Field(
        default=600,
        ge=0,
        description="Requests per minute per user on `/v1`, all of the user's tokens together "
        "(429 with `retry-after` beyond it), shared through Redis when `REDIS_URL` is set; `0` "
        "for no limit.",
    )
    parley_auth_failure_limit: int = Field(
        default=20,
        ge=0,
        description="Refused bearer tokens (`/v1` and `/admin`) one client address may send "
        "per minute; beyond it, its requests with a token get 429 with `retry-after` until "
        "the minute ends. Counted per process. `0` for no limit.",
    )
    parley_max_tokens_per_user: int = Field(
        default=20,
        ge=1,
        description="Live (unrevoked) API tokens a user may hold; issuing one more is refused "
        "until one is revoked.",
    )

    # The Responses API.
    parley_responses_wait: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a blocking `POST /v1/responses` waits before answering the "
        "response `in_progress`.",
    )
    parley_stream_keepalive: float = Field(
        default=15.0,
        gt=0,
        description="Seconds of silence before a stream sends a `: keep-alive` comment.",
    )
    parley_response_lease_seconds: float = Field(
        default=30.0,
        ge=0.3,
        description="How long a `/v1` response stays open without its process's heartbeat "
        "(renewed every third of this); past it, any `serve` or `api` process marks it "
        "`failed`, so a response whose process died is known to have died within about this "
        "long. Its own setting, not the queue's lease: the heartbeat is a database write that "
        "may wait behind other writers, and a false alarm fails an answer someone is waiting "
        "for.",
    )

    # Human handoff.
    parley_handoff_webhook_url: str | None = Field(
        default=None,
        description="Where a signed JSON notice is POSTed when a conversation goes to a person "
        "(the agent's handoff tool, an operator taking over, a person writing from the "
        "channel's app): conversation, channel, account, contact, reason and the admin API "
        "path, signed in `X-Parley-Signature-256: sha256=<HMAC-SHA256 of the body>`. Sent by "
        "the worker off the turn's path, retried with backoff; unset, nothing is sent.",
    )
    parley_handoff_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the handoff notices' HMAC signature; unset: `PARLEY_SECRET_KEY`. "
        "With neither, notices go unsigned.",
    )
    parley_handoff_webhook_attempts: int = Field(
        default=8,
        ge=1,
        description="Tries of one handoff notice (backoff doubling from 1 s up to 5 min) "
        "before it is kept as failed.",
    )
    parley_handoff_idle_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Hand a conversation back to the agent after this many minutes in human "
        "mode without an operator's reply (the agent then answers what the customer wrote "
        "meanwhile); unset: a person keeps it until handed back.",
    )

    # Webhook inbox: accept (group commit), then file.
    parley_inbox_batch: int = Field(
        default=256,
        ge=1,
        description="Most webhooks committed to the inbox in one transaction (group commit).",
    )
    parley_max_webhook_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest webhook body, in bytes: a larger one is refused with 413 before "
        "it is read (by its Content-Length) or as soon as it grows past this.",
    )
    parley_max_request_bytes: int = Field(
        default=20_971_520,
        ge=1024,
        description="Largest `/v1` request body, in bytes (admin bodies: 64 KiB): a larger one "
        "is refused with 413 by its Content-Length, or as soon as it grows past this.",
    )
    parley_body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a whole request body (webhooks, `/v1`, "
        "admin); a slower one is answered 408 and its connection closed.",
    )
    parley_inbox_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a batch of webhooks waits for its inbox commit, from its first "
        "webhook, before they are answered 503 (the channel delivers them again).",
    )
    parley_filer_batch: int = Field(
        default=8,
        ge=1,
        description="Most inbox rows filed into messages and statuses in one transaction. "
        "On SQLite, while a group commit of webhooks waits for the file, the filer commits "
        "after the row it is filing and leaves the rest for its next transaction, so the "
        "batch bounds how much is filed per commit when the door is quiet, not how long an "
        "acknowledgement waits.",
    )
    parley_filer_chunk: int = Field(
        default=50,
        ge=1,
        description="Most messages, statuses and events filed in one transaction. A webhook "
        "carrying more (Meta batches hundreds) is filed in several, so that on SQLite the "
        "file's one writer is never held for long: acknowledgements, `/readyz` and `/v1` go "
        "in between.",
    )
    parley_filer_poll_interval: float = Field(
        default=0.1,
        gt=0,
        description="Seconds between looks at the inbox for webhooks other processes "
        "accepted (`parley worker` files what `parley api` accepts); a process files what it "
        "accepted itself at once.",
    )

    # Worker.
    parley_worker_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Conversations answered at once per process. Unset: twice "
        "OPENAI_MAX_CONCURRENCY, so that the upstream's cap, not the worker, bounds the turns "
        "waiting on the model (a turn also reads, stores and marks read around its model call). "
        "While the process's filer has a backlog (a burst not yet filed), a quarter of it: a "
        "burst is filed first, then answered in fewer turns (one per customer's waiting "
        "messages). In `parley serve`, one while the door is pressed (webhooks coming in "
        "much faster than it commits them: 16 or more in one commit).",
    )
    parley_reconcile_interval: float = Field(
        default=15.0, gt=0, description="Seconds between reconciler runs."
    )
    parley_reconcile_after: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a received message may wait before its conversation is signalled "
        "again.",
    )
    parley_queue_lease_ms: int = Field(
        default=15_000,
        ge=100,
        description="How long a worker's hold on a conversation lasts without a heartbeat, in "
        "milliseconds; a crashed worker's conversations are taken over after about this long.",
    )
    parley_max_turn_attempts: int = Field(
        default=3,
        ge=1,
        description="Turns started for a message that never finished before it is "
        "dead-lettered (fallback reply, `failed`).",
    )
    parley_shutdown_grace: float = Field(
        default=20.0, ge=0, description="Seconds running turns get to finish on shutdown."
    )
    parley_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete conversations idle this many days (no message in or out), with "
        "their messages, outbox and response records, their contacts once nothing else is "
        "theirs, and their OpenAI conversations and stored responses upstream; usage sums "
        "stay. Run by the worker side (`serve`, `worker`) in small batches; unset: keep for "
        "ever.",
    )
    parley_log_level: str = Field(
        default="INFO", description="Log level: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."
    )
    parley_log_format: Literal["console", "json"] = Field(
        default="console",
        description="Log lines as `console` (readable, coloured on a terminal) or `json` (one "
        "object a line).",
    )
    parley_metrics_interval: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between the reads of the backlog (waiting messages, unfiled "
        "webhooks) that the `/metrics` gauges `parley_queue_depth` and "
        "`parley_queue_oldest_seconds` show.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="Send OpenTelemetry traces (webhook, turn, upstream call, send, SQL) over "
        "OTLP/HTTP to this collector URL, e.g. `http://localhost:4318`; unset = no tracing. "
        "Needs the `otel` extra (`pip install 'parley[otel]'`); the other `OTEL_*` variables "
        "(service name, headers, sampler) are read by the OpenTelemetry SDK itself.",
    )

    @field_validator("openai_base_url", "graph_api_base_url", "instagram_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("parley_handoff_webhook_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("graph_api_version")
    @classmethod
    def _strip_version_slashes(cls, value: str) -> str:
        return value.strip("/")

    @property
    def openai_timeout_s(self) -> float:
        return self.openai_timeout / 1000

    @property
    def worker_concurrency(self) -> int:
        """PARLEY_WORKER_CONCURRENCY, or twice the upstream's cap when unset."""
        return self.parley_worker_concurrency or 2 * self.openai_max_concurrency

    @property
    def queue_backend(self) -> Literal["memory", "redis"]:
        return "redis" if self.redis_url else "memory"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def identity_key(self) -> bytes:
        """What keys the one-way hashes of customers' ids (the `safety_identifier` sent
        upstream, an erasure's record): PARLEY_SECRET_KEY, else META_APP_SECRET."""
        key = self.secret("parley_secret_key") or self.secret("meta_app_secret") or "parley"
        return key.encode()

    @cached_property
    def console_key(self) -> bytes:
        """What signs the console's session cookies and CSRF tokens: derived from
        PARLEY_SECRET_KEY, else META_APP_SECRET, so that every process of a deployment accepts
        the sessions the others signed. With neither, a random key of this process: a session
        then ends with the process and is refused by the others."""
        key = self.secret("parley_secret_key") or self.secret("meta_app_secret")
        if not key:
            return secrets.token_bytes(32)
        return hmac.new(key.encode(), b"parley console session", hashlib.sha256).digest()

    @cached_property
    def instructions_text(self) -> str:
        """PARLEY_INSTRUCTIONS as text; ``@path`` reads a file once."""
        if self.parley_instructions.startswith("@"):
            return Path(self.parley_instructions[1:]).expanduser().read_text(encoding="utf-8")
        return self.parley_instructions

    def secret(self, name: str) -> str | None:
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def secret_values(self) -> list[str]:
        """Every secret setting's value, for the logs to mask wherever it appears."""
        return [
            value.get_secret_value()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        ]
