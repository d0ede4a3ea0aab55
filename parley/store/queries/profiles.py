"""The agent profiles a caller may name as `model` on `/v1`: `default`, and every profile that
has a prompt bound to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import PromptBinding
from parley.store.queries.prompts import DEFAULT_PROFILE


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    since: datetime | None
    """When its binding last changed; None for `default` with no prompt of its own."""


async def list_profiles(session: AsyncSession) -> list[Profile]:
    rows = await session.execute(
        select(PromptBinding.profile, PromptBinding.updated_at)
        .where(PromptBinding.profile.is_not(None))
        .order_by(PromptBinding.profile)
    )
    bound = {name: since for name, since in rows if name is not None}
    default = Profile(DEFAULT_PROFILE, bound.pop(DEFAULT_PROFILE, None))
    return [default, *(Profile(name, since) for name, since in bound.items())]
