"""The prompt registry's report: how each version did, to pick the better of an A/B test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import Conversation, Message, Prompt, PromptVersion
from parley.store.queries.prompts import DEFAULT_PROFILE


@dataclass(frozen=True, slots=True)
class VersionReport:
    """How one version did: its answers, their usage, and its conversations' handoffs."""

    prompt: str
    version: int
    version_id: int
    messages: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    avg_latency_ms: float | None
    conversations: int
    """Conversations assigned to this version (the last version that answered them)."""
    handoffs: int
    handoff_rate: float | None


async def prompt_report(
    session: AsyncSession,
    *,
    prompt: str | None = None,
    profile: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[VersionReport]:
    """Per version: agent messages with their tokens, cost and latency, conversations assigned
    and how many of those were handed to a human. `since`/`until` bound the messages' and the
    conversations' creation times (until exclusive)."""
    answers = await _answers(session, prompt=prompt, profile=profile, since=since, until=until)
    assigned = await _assigned(session, prompt=prompt, profile=profile, since=since, until=until)
    ids = sorted(set(answers) | set(assigned))
    names = await _names(session, ids)
    reports = []
    for version_id in ids:
        name, number = names[version_id]
        row = answers.get(version_id, (0, 0, 0, 0, 0, 0, None))
        conversations, handoffs = assigned.get(version_id, (0, 0))
        reports.append(
            VersionReport(
                prompt=name,
                version=number,
                version_id=version_id,
                messages=int(row[0]),
                input_tokens=int(row[1]),
                cached_tokens=int(row[2]),
                output_tokens=int(row[3]),
                reasoning_tokens=int(row[4]),
                cost_usd=Decimal(str(row[5])),
                avg_latency_ms=float(row[6]) if row[6] is not None else None,
                conversations=conversations,
                handoffs=handoffs,
                handoff_rate=handoffs / conversations if conversations else None,
            )
        )
    return sorted(reports, key=lambda r: (r.prompt, r.version))


def _in_profile(profile: str | None) -> Any:
    return func.coalesce(Conversation.profile, DEFAULT_PROFILE) == profile


async def _answers(
    session: AsyncSession,
    *,
    prompt: str | None,
    profile: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[int, tuple[Any, ...]]:
    query = (
        select(
            Message.prompt_version_id,
            func.count(Message.id),
            func.coalesce(func.sum(Message.input_tokens), 0),
            func.coalesce(func.sum(Message.cached_tokens), 0),
            func.coalesce(func.sum(Message.output_tokens), 0),
            func.coalesce(func.sum(Message.reasoning_tokens), 0),
            func.coalesce(func.sum(Message.cost_usd), 0),
            func.avg(Message.latency_ms),
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(PromptVersion, PromptVersion.id == Message.prompt_version_id)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .where(Message.sender == "agent")
        .group_by(Message.prompt_version_id)
    )
    if prompt is not None:
        query = query.where(Prompt.name == prompt)
    if profile is not None:
        query = query.where(_in_profile(profile))
    if since is not None:
        query = query.where(Message.created_at >= since)
    if until is not None:
        query = query.where(Message.created_at < until)
    return {int(row[0]): tuple(row[1:]) for row in await session.execute(query)}


async def _assigned(
    session: AsyncSession,
    *,
    prompt: str | None,
    profile: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[int, tuple[int, int]]:
    query = (
        select(
            Conversation.prompt_version_id,
            func.count(Conversation.id),
            func.count(Conversation.handed_off_at),
        )
        .join(PromptVersion, PromptVersion.id == Conversation.prompt_version_id)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .group_by(Conversation.prompt_version_id)
    )
    if prompt is not None:
        query = query.where(Prompt.name == prompt)
    if profile is not None:
        query = query.where(_in_profile(profile))
    if since is not None:
        query = query.where(Conversation.created_at >= since)
    if until is not None:
        query = query.where(Conversation.created_at < until)
    rows: list[tuple[Any, ...]] = [tuple(row) for row in await session.execute(query)]
    return {int(v): (int(n), int(h)) for v, n, h in rows}


async def _names(session: AsyncSession, ids: list[int]) -> dict[int, tuple[str, int]]:
    if not ids:
        return {}
    query = (
        select(PromptVersion.id, Prompt.name, PromptVersion.version)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .where(PromptVersion.id.in_(ids))
    )
    return {int(i): (str(n), int(v)) for i, n, v in await session.execute(query)}
