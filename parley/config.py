"""Settings: CONTRACT.md's environment, read once by the CLI and passed down.

Nothing reads the environment at import time, so tests build their own `Settings(...)`.
"""

from __future__ import annotations

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # Upstream LLM (OpenAI Responses API or any compatible server).
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_prompt_id: str | None = None
    openai_prompt_version: str | None = None
    openai_model: str = "gpt-5-mini"
    openai_timeout: int = Field(default=30_000, gt=0, description="milliseconds")
    openai_max_retries: int = Field(default=3, ge=0)
    openai_max_concurrency: int = Field(default=32, ge=1, description="upstream calls at once")
    openai_rpm: int | None = Field(default=None, ge=1, description="client-side requests/min")
    openai_tpm: int | None = Field(default=None, ge=1, description="client-side tokens/min")

    # The agent.
    parley_instructions: str = DEFAULT_INSTRUCTIONS
    parley_fallback_reply: str = DEFAULT_FALLBACK_REPLY
    parley_unsupported_reply: str = DEFAULT_UNSUPPORTED_REPLY
    parley_rate_limit_reply: str = DEFAULT_RATE_LIMIT_REPLY
    parley_customer_messages_per_minute: int = Field(
        default=20, ge=1, description="messages a customer may send per minute before a notice"
    )
    parley_max_input_chars: int = Field(
        default=4000, ge=1, description="longest customer text sent to the model"
    )
    parley_moderation: bool = False
    """Check customer text with the upstream's moderation endpoint before the model sees it."""
    parley_moderation_reply: str = DEFAULT_MODERATION_REPLY
    parley_redact_cards: bool = True
    """Mask payment card numbers in what is sent to the model (the stored text keeps them)."""
    parley_context: Literal["conversation", "previous_response", "local"] = "conversation"
    parley_context_tokens: int = Field(
        default=8000,
        gt=0,
        description="tokens of history (estimated as chars / 4) the `local` strategy sends, "
        "and a new remote conversation or chain is seeded with after the old one was lost",
    )

    parley_tools: str | None = None
    """Function tools besides the built-in ones: JSON list or `@path` (see agent/tools.py)."""
    parley_builtin_tools: str = "handoff_to_human,current_time"
    """Built-in tools the agent may use, comma-separated; empty for none."""
    parley_max_tool_steps: int = Field(default=5, ge=0)
    parley_timezone: str = "UTC"
    """The business's time zone, for the current_time tool."""
    parley_prices: str | None = None
    """Model prices (USD per 1M tokens) over the defaults: JSON text or `@path`."""

    # Store and queue.
    database_url: str = "sqlite+aiosqlite:///./parley.db"
    redis_url: str | None = None

    # Meta.
    meta_app_secret: SecretStr | None = None
    meta_verify_token: SecretStr | None = None
    graph_api_base_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v26.0"
    instagram_api_base_url: str = "https://graph.instagram.com"
    instagram_app_secret: SecretStr | None = None
    whatsapp_access_token: SecretStr | None = None
    instagram_access_token: SecretStr | None = None
    messenger_access_token: SecretStr | None = None
    graph_timeout: float = Field(default=15.0, gt=0, description="seconds per Graph API call")
    graph_max_attempts: int = Field(default=6, ge=1, description="tries per outbound message")

    # Admin and secrets.
    parley_admin_token: SecretStr | None = None
    parley_secret_key: SecretStr | None = None
    parley_api_rate_limit: int = Field(
        default=600, ge=0, description="requests per minute per API token; 0 for no limit"
    )

    # The Responses API.
    parley_responses_wait: float = Field(
        default=120.0,
        gt=0,
        description="seconds a blocking POST /v1/responses waits before answering in_progress",
    )
    parley_stream_keepalive: float = Field(
        default=15.0, gt=0, description="seconds of silence before a stream sends a keep-alive"
    )

    # Worker.
    parley_worker_concurrency: int = Field(default=16, ge=1)
    parley_reconcile_interval: float = Field(default=15.0, gt=0, description="seconds")
    parley_reconcile_after: float = Field(
        default=30.0, gt=0, description="seconds a received message may wait before re-signal"
    )
    parley_queue_lease_ms: int = Field(
        default=15_000,
        ge=100,
        description="how long a worker's hold on a conversation lasts without a heartbeat; "
        "a crashed worker's conversations are taken over after about this long",
    )
    parley_max_turn_attempts: int = Field(
        default=3, ge=1, description="turns started for a message before it is dead-lettered"
    )
    parley_shutdown_grace: float = Field(
        default=20.0, ge=0, description="seconds running turns get to finish on shutdown"
    )
    parley_log_level: str = "INFO"
    parley_log_format: Literal["console", "json"] = "console"

    @field_validator("openai_base_url", "graph_api_base_url", "instagram_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("graph_api_version")
    @classmethod
    def _strip_version_slashes(cls, value: str) -> str:
        return value.strip("/")

    @property
    def openai_timeout_s(self) -> float:
        return self.openai_timeout / 1000

    @property
    def queue_backend(self) -> Literal["memory", "redis"]:
        return "redis" if self.redis_url else "memory"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def instructions_text(self) -> str:
        """PARLEY_INSTRUCTIONS as text; ``@path`` reads a file once."""
        if self.parley_instructions.startswith("@"):
            return Path(self.parley_instructions[1:]).expanduser().read_text(encoding="utf-8")
        return self.parley_instructions

    def secret(self, name: str) -> str | None:
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value() if value is not None else None
