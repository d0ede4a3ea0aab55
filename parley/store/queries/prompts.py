"""Parley's prompt registry: named prompts, numbered immutable versions, and which version
answers for an agent profile or an account (optionally A/B-testing a candidate).

A version is never updated: a change is a new version, so every stored answer keeps pointing
at the exact text that produced it. Binding a version remembers the one it replaced, which is
what a rollback returns to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from parley.errors import (
    AccountError,
    AccountNotFound,
    PromptConflict,
    PromptInvalid,
    PromptNotFound,
)
from parley.store.models import (
    Account,
    Prompt,
    PromptBinding,
    PromptVersion,
    utcnow,
)
from parley.store.queries.accounts import find_account
from parley.store.queries.changes import ChangeCounter

DEFAULT_PROFILE = "default"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MODEL_SETTINGS = frozenset(
    {
        "temperature",
        "top_p",
        "max_output_tokens",
        "max_tool_calls",
        "parallel_tool_calls",
        "reasoning",
        "text",
        "truncation",
        "tool_choice",
        "service_tier",
        "top_logprobs",
        "prompt_cache_key",
    }
)
"""Responses API parameters a version may set; anything else is refused when it is added."""

BINDING_CHANGES = ChangeCounter("prompt_bindings")
"""Which version answers an account or profile (`prompt_cache` remembers bindings under it)."""


@dataclass(frozen=True, slots=True)
class VersionFields:
    """What a new version holds."""

    instructions: str
    model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    """Variable names with their default values."""
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a version is bound: an agent profile, or one account (which wins over profiles)."""

    profile: str | None = None
    account_id: int | None = None

    def __post_init__(self) -> None:
        if (self.profile is None) == (self.account_id is None):
            raise PromptInvalid("bind to either a profile or an account, not both or neither")

    def __str__(self) -> str:
        return f"profile {self.profile!r}" if self.profile else f"account {self.account_id}"


@dataclass(frozen=True, slots=True)
class PromptSummary:
    name: str
    description: str | None
    versions: int
    latest: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BindingView:
    """A binding with its versions' names and numbers, for listings."""

    profile: str | None
    account_id: int | None
    prompt: str
    version: int
    candidate_prompt: str | None
    candidate_version: int | None
    candidate_percent: int
    updated_at: datetime


# --- prompts and versions -------------------------------------------------------------------


async def create_prompt(
    session: AsyncSession, *, name: str, description: str | None, first: VersionFields
) -> PromptVersion:
    """A new prompt with its version 1."""
    _check_name(name, "prompt name")
    if await _prompt_named(session, name) is not None:
        raise PromptConflict(f"a prompt named {name!r} already exists")
    prompt = Prompt(name=name, description=description, created_at=utcnow())
    session.add(prompt)
    await session.flush()
    return await _add(session, prompt, first)


async def add_version(session: AsyncSession, *, name: str, fields: VersionFields) -> PromptVersion:
    """The prompt's next version (versions are numbered from 1 and never change)."""
    return await _add(session, await get_prompt(session, name=name), fields)


async def _add(session: AsyncSession, prompt: Prompt, fields: VersionFields) -> PromptVersion:
    _check_fields(fields)
    last = await session.scalar(
        select(func.max(PromptVersion.version)).where(PromptVersion.prompt_id == prompt.id)
    )
    version = PromptVersion(
        prompt_id=prompt.id,
        version=(last or 0) + 1,
        instructions=fields.instructions,
        model=fields.model or None,
        settings=dict(fields.settings),
        variables={str(k): "" if v is None else str(v) for k, v in fields.variables.items()},
        note=fields.note,
        created_at=utcnow(),
    )
    session.add(version)
    await session.flush()
    return version


async def get_prompt(session: AsyncSession, *, name: str) -> Prompt:
    prompt = await _prompt_named(session, name)
    if prompt is None:
        raise PromptNotFound(f"no prompt named {name!r}")
    return prompt


async def get_version(
    session: AsyncSession, *, name: str, version: int | None = None
) -> PromptVersion:
    """Version `version` of the prompt `name`, or its latest when None."""
    prompt = await get_prompt(session, name=name)
    query = select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
    if version is None:
        query = query.order_by(PromptVersion.version.desc()).limit(1)
    else:
        query = query.where(PromptVersion.version == version)
    found = await session.scalar(query)
    if found is None:
        raise PromptNotFound(f"prompt {name!r} has no version {version}")
    return found


async def list_versions(session: AsyncSession, *, name: str) -> list[PromptVersion]:
    prompt = await get_prompt(session, name=name)
    query = (
        select(PromptVersion)
        .where(PromptVersion.prompt_id == prompt.id)
        .order_by(PromptVersion.version)
    )
    return list(await session.scalars(query))


async def list_prompts(session: AsyncSession) -> list[PromptSummary]:
    query = (
        select(
            Prompt.name,
            Prompt.description,
            func.count(PromptVersion.id),
            func.coalesce(func.max(PromptVersion.version), 0),
            Prompt.created_at,
        )
        .outerjoin(PromptVersion, PromptVersion.prompt_id == Prompt.id)
        .group_by(Prompt.id, Prompt.name, Prompt.description, Prompt.created_at)
        .order_by(Prompt.name)
    )
    return [
        PromptSummary(name, description, int(count), int(latest), created_at)
        for name, description, count, latest, created_at in await session.execute(query)
    ]


async def version_named(session: AsyncSession, *, version_id: int) -> tuple[str, PromptVersion]:
    """A version with its prompt's name."""
    row = (
        await session.execute(
            select(Prompt.name, PromptVersion)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(PromptVersion.id == version_id)
        )
    ).one()
    return str(row[0]), row[1]


async def _prompt_named(session: AsyncSession, name: str) -> Prompt | None:
    return await session.scalar(select(Prompt).where(Prompt.name == name))


def _check_name(name: str, what: str, limit: int = 128) -> None:
    if not NAME.fullmatch(name) or len(name) > limit:
        raise PromptInvalid(
            f"{what} {name!r} must be 1–{limit} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_fields(fields: VersionFields) -> None:
    if not fields.instructions.strip():
        raise PromptInvalid("a prompt version needs instructions")
    unknown = sorted(set(fields.settings) - MODEL_SETTINGS)
    if unknown:
        raise PromptInvalid(
            f"unknown model settings {unknown}; allowed: {', '.join(sorted(MODEL_SETTINGS))}"
        )


# --- bindings -------------------------------------------------------------------------------


async def binding_for(
    session: AsyncSession, *, account_id: int, profile: str | None
) -> PromptBinding | None:
    """What answers a conversation: the account's own binding, else its profile's."""
    own = await _binding(session, Target(account_id=account_id))
    if own is not None:
        return own
    return await _binding(session, Target(profile=profile or DEFAULT_PROFILE))


async def account_id_for(session: AsyncSession, *, ref: str) -> int:
    """An account's id from ``channel:id``, its channel id (phone_number_id, page id) or its
    own id (see `accounts.find_account`; by its own id, a Responses API user's account too)."""
    try:
        return (await find_account(session, ref=ref)).id
    except AccountNotFound as exc:
        if ref.isdigit() and await session.get(Account, int(ref)) is not None:
            return int(ref)
        raise PromptNotFound(str(exc)) from exc
    except AccountError as exc:
        raise PromptNotFound(str(exc)) from exc


async def profile_bound(session: AsyncSession, *, profile: str) -> bool:
    return await _binding(session, Target(profile=profile)) is not None


async def activate(
    session: AsyncSession, *, target: Target, version: PromptVersion
) -> PromptBinding:
    """Make `version` the one that answers for `target`. Ends any A/B test there: activating
    is also how a winning candidate is promoted."""
    if target.profile is not None:
        _check_name(target.profile, "profile name", limit=64)
    elif await session.get(Account, target.account_id) is None:
        raise PromptNotFound(f"no account with id {target.account_id}")
    BINDING_CHANGES.mark(session)
    binding = await _binding(session, target)
    if binding is None:
        binding = PromptBinding(
            profile=target.profile, account_id=target.account_id, version_id=version.id
        )
        session.add(binding)
    elif binding.version_id != version.id:
        binding.previous_version_id = binding.version_id
        binding.version_id = version.id
    binding.candidate_version_id, binding.candidate_percent = None, 0
    binding.updated_at = utcnow()
    await session.flush()
    return binding


async def rollback(
    session: AsyncSession, *, target: Target, version: PromptVersion | None = None
) -> PromptBinding:
    """Bind `version`, or else the version active before the current one (failing that, the
    current prompt's version one below, so repeated rollbacks keep stepping back)."""
    binding = await _required(session, target)
    if version is not None:
        return await activate(session, target=target, version=version)
    binding = await activate(session, target=target, version=await _previous(session, binding))
    # Forgotten, so that a second rollback steps further back instead of undoing the first.
    binding.previous_version_id = None
    await session.flush()
    return binding


async def _previous(session: AsyncSession, binding: PromptBinding) -> PromptVersion:
    if binding.previous_version_id is not None:
        previous = await session.get(PromptVersion, binding.previous_version_id)
        if previous is not None:
            return previous
    current = await session.get(PromptVersion, binding.version_id)
    below = None
    if current is not None:
        below = await session.scalar(
            select(PromptVersion).where(
                PromptVersion.prompt_id == current.prompt_id,
                PromptVersion.version == current.version - 1,
            )
        )
    if below is None:
        raise PromptNotFound("there is no earlier version to roll back to")
    return below


async def start_ab(
    session: AsyncSession, *, target: Target, candidate: PromptVersion, percent: int
) -> PromptBinding:
    """New conversations of `target` get `candidate` with probability `percent`/100."""
    if not 0 <= percent <= 100:
        raise PromptInvalid(f"percent must be between 0 and 100, not {percent}")
    BINDING_CHANGES.mark(session)
    binding = await _required(session, target)
    if candidate.id == binding.version_id:
        raise PromptInvalid("the candidate is the active version already")
    binding.candidate_version_id, binding.candidate_percent = candidate.id, percent
    binding.updated_at = utcnow()
    await session.flush()
    return binding


async def stop_ab(session: AsyncSession, *, target: Target) -> PromptBinding:
    BINDING_CHANGES.mark(session)
    binding = await _required(session, target)
    binding.candidate_version_id, binding.candidate_percent = None, 0
    binding.updated_at = utcnow()
    await session.flush()
    return binding


async def list_bindings(session: AsyncSession) -> list[BindingView]:
    active, candidate = aliased(PromptVersion), aliased(PromptVersion)
    active_prompt, candidate_prompt = aliased(Prompt), aliased(Prompt)
    query = (
        select(
            PromptBinding,
            active_prompt.name,
            active.version,
            candidate_prompt.name,
            candidate.version,
        )
        .join(active, active.id == PromptBinding.version_id)
        .join(active_prompt, active_prompt.id == active.prompt_id)
        .outerjoin(candidate, candidate.id == PromptBinding.candidate_version_id)
        .outerjoin(candidate_prompt, candidate_prompt.id == candidate.prompt_id)
        .order_by(PromptBinding.profile.is_(None), PromptBinding.profile, PromptBinding.account_id)
    )
    return [
        BindingView(
            profile=binding.profile,
            account_id=binding.account_id,
            prompt=name,
            version=number,
            candidate_prompt=candidate_name,
            candidate_version=candidate_number,
            candidate_percent=binding.candidate_percent,
            updated_at=binding.updated_at,
        )
        for binding, name, number, candidate_name, candidate_number in await session.execute(query)
    ]


async def view_binding(session: AsyncSession, *, target: Target) -> BindingView:
    found = [
        b
        for b in await list_bindings(session)
        if (b.profile, b.account_id) == (target.profile, target.account_id)
    ]
    if not found:
        raise PromptNotFound(f"{target} has no active prompt")
    return found[0]


async def _binding(session: AsyncSession, target: Target) -> PromptBinding | None:
    if target.profile is not None:
        condition = PromptBinding.profile == target.profile
    else:
        condition = PromptBinding.account_id == target.account_id
    return await session.scalar(select(PromptBinding).where(condition))


async def _required(session: AsyncSession, target: Target) -> PromptBinding:
    binding = await _binding(session, target)
    if binding is None:
        raise PromptNotFound(f"{target} has no active prompt; activate one first")
    return binding
