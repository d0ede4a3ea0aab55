"""Which prompt answers a conversation, with its variables filled in.

Both the worker (channels) and the Responses API ask `choose_prompt` before a turn. The order:
the account's own binding, else the binding of the conversation's profile (else the account's,
else ``default``), else the built-in prompt from the environment (PARLEY_INSTRUCTIONS). The model
is the version's, else the account's, else OPENAI_MODEL.
While a binding runs an A/B test, a conversation keeps the version it was first given (stored
as `conversations.prompt_version_id`); new ones are split by a stable hash of their id.

Instructions may hold ``{{name}}`` placeholders: ``customer_name``, ``channel``, ``account``,
``local_time`` (in PARLEY_TIMEZONE), and any variable the version declares with a default.
An unknown placeholder is left as written, with a warning.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Account, AnyConversation, Contact, Conversation, PromptBinding
from parley.store.queries.prompt_cache import PromptCache
from parley.store.queries.prompts import (
    DEFAULT_PROFILE,
    binding_for,
    profile_bound,
    version_named,
)

log = structlog.get_logger(__name__)

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_warned: set[str] = set()
"""Placeholders already warned about: a typo would otherwise log on every turn."""


@dataclass(frozen=True, slots=True)
class PromptDefaults:
    """The built-in prompt, from the environment."""

    instructions: str
    model: str
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class PromptChoice:
    """The prompt a turn runs with. `name` None is the built-in prompt."""

    name: str | None
    version: int | None
    version_id: int | None
    instructions: str
    """With the variables filled in."""
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    """Model settings sent upstream: temperature, top_p, max_output_tokens, reasoning…"""
    variables: dict[str, str] = field(default_factory=dict)
    """The values the placeholders were filled with (also sent with a dashboard prompt)."""

    @property
    def label(self) -> dict[str, Any]:
        """What a stored message records of it."""
        return {"name": self.name, "version": self.version}


async def choose_prompt(
    session: AsyncSession,
    *,
    conversation: AnyConversation,
    account: Account,
    contact: Contact | None,
    defaults: PromptDefaults,
    now: datetime | None = None,
    cache: PromptCache | None = None,
) -> PromptChoice:
    """The prompt for the conversation's next turn. Records the version on the conversation
    when it changes (in the caller's transaction, which the caller commits). With `cache`,
    bindings and versions are read through it (see `store.queries.prompt_cache`)."""
    profile = conversation.profile
    binding = await find_binding(session, account=account, profile=profile, cache=cache)
    if binding is None:
        return builtin_prompt(
            conversation=conversation, account=account, contact=contact, defaults=defaults, now=now
        )
    return await bound_prompt(
        session,
        binding,
        conversation=conversation,
        account=account,
        contact=contact,
        defaults=defaults,
        now=now,
        cache=cache,
    )


async def find_binding(
    session: AsyncSession,
    *,
    account: Account,
    profile: str | None,
    cache: PromptCache | None = None,
) -> PromptBinding | None:
    """The binding that gives a conversation of `account` with `profile` (its own, if any)
    its prompt; None: the built-in prompt. The conversation need not be stored yet."""
    lookup = cache or _Uncached
    return await lookup.binding_for(
        session, account_id=account.id, profile=profile or account.profile
    )


def builtin_prompt(
    *,
    conversation: AnyConversation,
    account: Account,
    contact: Contact | None,
    defaults: PromptDefaults,
    now: datetime | None = None,
) -> PromptChoice:
    """The built-in prompt (no binding), filled in for the conversation: nothing is read or
    written, and the conversation's id is not needed."""
    values = _variables(conversation, account, contact, defaults, now)
    return PromptChoice(
        name=None,
        version=None,
        version_id=None,
        instructions=fill(defaults.instructions, values),
        model=account.model or defaults.model,
        variables=values,
    )


async def bound_prompt(
    session: AsyncSession,
    binding: PromptBinding,
    *,
    conversation: AnyConversation,
    account: Account,
    contact: Contact | None,
    defaults: PromptDefaults,
    now: datetime | None = None,
    cache: PromptCache | None = None,
) -> PromptChoice:
    """The version `binding` gives the conversation, recorded on it when it changes."""
    values = _variables(conversation, account, contact, defaults, now)
    version_id = assigned_version(binding, conversation)
    if version_id != conversation.prompt_version_id:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id)
            .values(prompt_version_id=version_id)
        )
    lookup = cache or _Uncached
    name, version = await lookup.version_named(session, version_id=version_id)
    # The conversation's own facts win; a version's defaults fill what is empty or extra.
    values = {**values, **version.variables, **{k: v for k, v in values.items() if v}}
    return PromptChoice(
        name=name,
        version=version.version,
        version_id=version.id,
        instructions=fill(version.instructions, values),
        model=version.model or account.model or defaults.model,
        settings=dict(version.settings),
        variables=values,
    )


def _variables(
    conversation: AnyConversation,
    account: Account,
    contact: Contact | None,
    defaults: PromptDefaults,
    now: datetime | None,
) -> dict[str, str]:
    timezone = defaults.timezone
    return conversation_variables(
        conversation=conversation, account=account, contact=contact, timezone=timezone, now=now
    )


class _Uncached:
    binding_for = staticmethod(binding_for)
    version_named = staticmethod(version_named)


async def profile_exists(session: AsyncSession, name: str) -> bool:
    """Whether `name` is an agent profile: ``default``, or a profile with a bound prompt."""
    return name == DEFAULT_PROFILE or await profile_bound(session, profile=name)


def assigned_version(binding: PromptBinding, conversation: AnyConversation) -> int:
    """The binding's version for this conversation. During an A/B test a conversation keeps
    the side it was given; outside one, every conversation follows the active version, so a
    rollback reaches the next turn of every conversation."""
    candidate = binding.candidate_version_id
    if candidate is None or binding.candidate_percent <= 0:
        return binding.version_id
    if conversation.prompt_version_id in (binding.version_id, candidate):
        return conversation.prompt_version_id
    if ab_bucket(conversation.id) < binding.candidate_percent:
        return candidate
    return binding.version_id


def ab_bucket(conversation_id: int) -> int:
    """A stable number from 0 to 99 for the conversation: the same on every process and restart."""
    digest = hashlib.sha256(f"parley-ab:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def conversation_variables(
    *,
    conversation: AnyConversation,
    account: Account,
    contact: Contact | None,
    timezone: str,
    now: datetime | None = None,
) -> dict[str, str]:
    customer = (contact.name or contact.username or "") if contact is not None else ""
    return {
        "customer_name": customer,
        "channel": conversation.channel,
        "account": account.name or account.external_id,
        "local_time": local_time(timezone, now),
    }


def local_time(timezone: str, now: datetime | None = None) -> str:
    """E.g. ``2026-11-23 14:05 (Europe/Madrid)``; an unknown zone reads as UTC."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    moment = (now or datetime.now(UTC)).astimezone(zone)
    return f"{moment:%Y-%m-%d %H:%M} ({zone.key})"


def fill(text: str, values: dict[str, str]) -> str:
    """Replace ``{{name}}`` with its value; unknown names stay as written."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name in values:
            return values[name]
        if name not in _warned:
            _warned.add(name)
            log.warning("prompt.unknown_variable", variable=name)
        return match[0]

    return PLACEHOLDER.sub(value, text)
