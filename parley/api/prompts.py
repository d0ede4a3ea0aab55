"""The admin API of the prompt registry: prompts and their versions, which version answers for
each agent profile or account, A/B tests, rollbacks, and the per-version report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.api.admin import require_admin
from parley.api.errors import ADMIN_ERRORS
from parley.deps import RowId, SessionDep
from parley.errors import PromptConflict, PromptInvalid, PromptNotFound
from parley.store.models import PromptVersion
from parley.store.queries import prompts as queries
from parley.store.queries.prompt_report import prompt_report
from parley.store.queries.prompts import Target, VersionFields

router = APIRouter(
    prefix="/admin",
    tags=["prompts"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)


class VersionCreate(BaseModel):
    instructions: str = Field(min_length=1)
    model: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    """Model settings: temperature, top_p, max_output_tokens, reasoning…"""
    variables: dict[str, str] = Field(default_factory=dict)
    note: str | None = None

    def fields(self) -> VersionFields:
        return VersionFields(
            instructions=self.instructions,
            model=self.model,
            settings=self.settings,
            variables=self.variables,
            note=self.note,
        )


class PromptCreate(VersionCreate):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None


class VersionPublic(BaseModel):
    prompt: str
    version: int
    instructions: str
    model: str | None
    settings: dict[str, Any]
    variables: dict[str, str]
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, prompt: str, version: PromptVersion) -> VersionPublic:
        return cls(
            prompt=prompt,
            version=version.version,
            instructions=version.instructions,
            model=version.model,
            settings=version.settings,
            variables=version.variables,
            note=version.note,
            created_at=version.created_at,
        )


class PromptPublic(BaseModel):
    name: str
    description: str | None
    versions: int
    latest: int
    created_at: datetime

    model_config = {"from_attributes": True}


class PromptDetail(BaseModel):
    name: str
    description: str | None
    created_at: datetime
    versions: list[VersionPublic]


class Bind(BaseModel):
    prompt: str
    version: int | None = Field(default=None, ge=1)
    """None: the prompt's latest version."""


class Rollback(BaseModel):
    prompt: str | None = None
    """None: the prompt active now."""
    version: int | None = Field(default=None, ge=1)
    """None: the version that was active before the current one."""


class ABTest(BaseModel):
    prompt: str
    version: int = Field(ge=1)
    percent: int = Field(ge=0, le=100)
    """Share of new conversations that get this candidate version."""


class BindingPublic(BaseModel):
    profile: str | None
    account_id: int | None
    prompt: str
    version: int
    candidate_prompt: str | None
    candidate_version: int | None
    candidate_percent: int
    updated_at: datetime

    model_config = {"from_attributes": True}


class VersionReportPublic(BaseModel):
    prompt: str
    version: int
    messages: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    avg_latency_ms: float | None
    conversations: int
    handoffs: int
    handoff_rate: float | None

    model_config = {"from_attributes": True}


@contextmanager
def _errors() -> Iterator[None]:
    """The registry's errors as HTTP answers, in one place."""
    try:
        yield
    except PromptNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except PromptConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except PromptInvalid as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except IntegrityError as exc:  # a concurrent request took the same name or number
        raise HTTPException(status.HTTP_409_CONFLICT, "conflicting change; retry") from exc


async def _commit(session: AsyncSession) -> None:
    with _errors():
        await session.commit()


# --- prompts and versions -------------------------------------------------------------------


@router.post("/prompts", status_code=status.HTTP_201_CREATED)
async def create_prompt(body: PromptCreate, session: SessionDep) -> VersionPublic:
    """A new prompt with its first version."""
    with _errors():
        version = await queries.create_prompt(
            session, name=body.name, description=body.description, first=body.fields()
        )
    await _commit(session)
    return VersionPublic.of(body.name, version)


@router.get("/prompts")
async def list_prompts(session: SessionDep) -> list[PromptPublic]:
    return [PromptPublic.model_validate(p) for p in await queries.list_prompts(session)]


@router.get("/prompts/report")
async def report(
    session: SessionDep,
    prompt: str | None = None,
    profile: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[VersionReportPublic]:
    """Per version: answers, tokens, cost, latency, conversations and handoff rate, to compare
    the two sides of an A/B test. `since`/`until` are UTC unless they say otherwise."""
    rows = await prompt_report(
        session, prompt=prompt, profile=profile, since=_utc(since), until=_utc(until)
    )
    return [VersionReportPublic.model_validate(row) for row in rows]


@router.get("/prompts/{name}")
async def show_prompt(name: str, session: SessionDep) -> PromptDetail:
    with _errors():
        prompt = await queries.get_prompt(session, name=name)
        versions = await queries.list_versions(session, name=name)
    return PromptDetail(
        name=prompt.name,
        description=prompt.description,
        created_at=prompt.created_at,
        versions=[VersionPublic.of(name, v) for v in versions],
    )


@router.post("/prompts/{name}/versions", status_code=status.HTTP_201_CREATED)
async def add_version(name: str, body: VersionCreate, session: SessionDep) -> VersionPublic:
    """The prompt's next version; versions never change once added."""
    with _errors():
        version = await queries.add_version(session, name=name, fields=body.fields())
    await _commit(session)
    return VersionPublic.of(name, version)


@router.get("/prompts/{name}/versions/{number}")
async def show_version(name: str, number: RowId, session: SessionDep) -> VersionPublic:
    with _errors():
        version = await queries.get_version(session, name=name, version=number)
    return VersionPublic.of(name, version)


# --- bindings -------------------------------------------------------------------------------


@router.get("/profiles")
async def list_profiles(session: SessionDep) -> list[BindingPublic]:
    """Every profile and account with its active version and any A/B test."""
    return [BindingPublic.model_validate(b) for b in await queries.list_bindings(session)]


@router.put("/profiles/{profile}")
async def activate_for_profile(profile: str, body: Bind, session: SessionDep) -> BindingPublic:
    """Make a version the one that answers for the profile (ends an A/B test there)."""
    return await _activate(session, Target(profile=profile), body)


@router.put("/accounts/{account_id}/prompt")
async def activate_for_account(account_id: RowId, body: Bind, session: SessionDep) -> BindingPublic:
    """Make a version the one that answers for this account, over its profile's."""
    return await _activate(session, Target(account_id=account_id), body)


@router.post("/profiles/{profile}/rollback")
async def rollback_profile(
    profile: str, session: SessionDep, body: Annotated[Rollback | None, Body()] = None
) -> BindingPublic:
    """Back to the version active before (or to the one given)."""
    return await _rollback(session, Target(profile=profile), body)


@router.post("/accounts/{account_id}/prompt/rollback")
async def rollback_account(
    account_id: RowId, session: SessionDep, body: Annotated[Rollback | None, Body()] = None
) -> BindingPublic:
    return await _rollback(session, Target(account_id=account_id), body)


@router.put("/profiles/{profile}/ab")
async def start_ab(profile: str, body: ABTest, session: SessionDep) -> BindingPublic:
    """Split the profile's new conversations: `percent` of them get the candidate version."""
    target = Target(profile=profile)
    with _errors():
        candidate = await queries.get_version(session, name=body.prompt, version=body.version)
        await queries.start_ab(session, target=target, candidate=candidate, percent=body.percent)
    return await _view(session, target)


@router.delete("/profiles/{profile}/ab")
async def stop_ab(profile: str, session: SessionDep) -> BindingPublic:
    """End the A/B test: every conversation goes back to the active version."""
    target = Target(profile=profile)
    with _errors():
        await queries.stop_ab(session, target=target)
    return await _view(session, target)


async def _activate(session: AsyncSession, target: Target, body: Bind) -> BindingPublic:
    with _errors():
        version = await queries.get_version(session, name=body.prompt, version=body.version)
        await queries.activate(session, target=target, version=version)
    return await _view(session, target)


async def _rollback(session: AsyncSession, target: Target, body: Rollback | None) -> BindingPublic:
    with _errors():
        version = None
        if body is not None and body.version is not None:
            # A bare number is a version of the prompt active now.
            name = body.prompt or (await queries.view_binding(session, target=target)).prompt
            version = await queries.get_version(session, name=name, version=body.version)
        await queries.rollback(session, target=target, version=version)
    return await _view(session, target)


async def _view(session: AsyncSession, target: Target) -> BindingPublic:
    await _commit(session)
    with _errors():
        return BindingPublic.model_validate(await queries.view_binding(session, target=target))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
