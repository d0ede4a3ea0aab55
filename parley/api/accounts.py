"""The admin API of accounts: the WhatsApp numbers, Instagram accounts and Facebook pages Parley
serves, each with its own credentials and settings (admin bearer token).

Secrets go in and never come out: an account shows each as set or not, with a fingerprint.
Deleting an account keeps its row, conversations and messages for audit, and erases its
credentials; adding the same id again serves it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.api.admin import require_admin
from parley.api.errors import ADMIN_ERRORS
from parley.channels import registry
from parley.deps import RowId, RuntimeDep, SessionDep
from parley.errors import AccountConflict, AccountInvalid, AccountNotFound, SecretsDisabled
from parley.store.models import Account
from parley.store.queries import accounts as queries
from parley.store.queries.accounts import AccountFields

router = APIRouter(
    prefix="/admin",
    tags=["accounts"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)
STORED = frozenset(f.name for f in dataclasses.fields(AccountFields))


class AccountSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str | None = None
    """Display name (the prompts' ``{{account}}``)."""
    access_token: SecretStr | None = None
    """Token to send with; unset: the environment's `<CHANNEL>_ACCESS_TOKEN`."""
    app_secret: SecretStr | None = None
    """App secret that signs this account's webhooks, where it is not META_APP_SECRET."""
    verify_token: SecretStr | None = None
    """Accepted in the webhook handshake besides META_VERIFY_TOKEN."""
    profile: str | None = None
    """Agent profile whose prompt answers; unset: ``default``."""
    model: str | None = None
    """Model where the prompt version names none; unset: OPENAI_MODEL."""
    send_rate: float | None = None
    """Messages per second; unset: the channel's default."""

    def fields(self) -> AccountFields:
        """The fields the body gave (null clears one), secrets in the clear for the store."""
        given: dict[str, Any] = {}
        for name in self.model_fields_set & STORED:
            value = getattr(self, name)
            given[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return AccountFields(**given)


class AccountCreate(AccountSettings):
    channel: str
    external_id: str
    """The channel's id: WhatsApp phone_number_id, Instagram account id, Facebook page id."""
    enabled: bool = True

    def fields(self) -> AccountFields:
        return dataclasses.replace(super().fields(), enabled=self.enabled)


class AccountUpdate(AccountSettings):
    enabled: bool | None = None


class SecretPublic(BaseModel):
    set: bool
    fingerprint: str | None
    """Eight hex digits keyed by PARLEY_SECRET_KEY: equal for equal values, nothing more."""
    readable: bool
    """False when PARLEY_SECRET_KEY does not decrypt it (the key changed)."""

    model_config = {"from_attributes": True}


class AccountPublic(BaseModel):
    id: int
    channel: str
    external_id: str
    name: str | None
    status: str
    """``active``, ``disabled``, ``removed``, or ``unconfigured`` (only seen in a webhook)."""
    enabled: bool
    profile: str | None
    model: str | None
    send_rate: float | None
    access_token: SecretPublic
    app_secret: SecretPublic
    verify_token: SecretPublic
    created_at: datetime
    updated_at: datetime | None
    removed_at: datetime | None

    model_config = {"from_attributes": True}


@contextmanager
def _errors() -> Iterator[None]:
    """The accounts' refusals as HTTP answers, in one place."""
    try:
        yield
    except AccountNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except AccountConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except (AccountInvalid, SecretsDisabled) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except IntegrityError as exc:  # a webhook or another request made the same row meanwhile
        raise HTTPException(status.HTTP_409_CONFLICT, "conflicting change; retry") from exc


def _public(account: Account, runtime: RuntimeDep) -> AccountPublic:
    return AccountPublic.model_validate(queries.describe(account, runtime.secrets))


async def _commit(session: AsyncSession) -> None:
    with _errors():
        await session.commit()


@router.get("/accounts")
async def list_accounts(
    session: SessionDep,
    runtime: RuntimeDep,
    channel: str | None = None,
    include_removed: bool = False,
    include_unconfigured: bool = False,
) -> list[AccountPublic]:
    """Configured accounts; removed ones and ids only seen in webhooks on request."""
    rows = await queries.list_accounts(
        session,
        channel=channel,
        include_removed=include_removed,
        include_unconfigured=include_unconfigured,
    )
    return [_public(row, runtime) for row in rows]


@router.post("/accounts", status_code=status.HTTP_201_CREATED)
async def create_account(
    body: AccountCreate, session: SessionDep, runtime: RuntimeDep
) -> AccountPublic:
    """Configure an account. An id Parley has already seen (or removed) keeps its history."""
    with _errors():
        account, _ = await queries.add_account(
            session,
            channel=body.channel,
            external_id=body.external_id,
            values=body.fields(),
            box=runtime.secrets,
            channels=registry.names(),
        )
    await _commit(session)
    return _public(account, runtime)


@router.get("/accounts/{account_id}")
async def show_account(
    account_id: RowId, session: SessionDep, runtime: RuntimeDep
) -> AccountPublic:
    return _public(await _by_id(session, account_id), runtime)


@router.patch("/accounts/{account_id}")
async def update_account(
    account_id: RowId, body: AccountUpdate, session: SessionDep, runtime: RuntimeDep
) -> AccountPublic:
    """Change the fields given; `null` clears one (a secret then falls back to the
    environment's)."""
    account = await _by_id(session, account_id)
    if "enabled" in body.model_fields_set and body.enabled is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "enabled must be true or false")
    with _errors():
        await queries.update_account(
            session, account=account, values=body.fields(), box=runtime.secrets
        )
    await _commit(session)
    return _public(account, runtime)


@router.delete("/accounts/{account_id}")
async def remove_account(
    account_id: RowId, session: SessionDep, runtime: RuntimeDep
) -> AccountPublic:
    """Stop serving the account; it stays, with its history, as ``removed``."""
    account = await _by_id(session, account_id)
    with _errors():
        await queries.remove_account(session, account=account)
    await _commit(session)
    return _public(account, runtime)


async def _by_id(session: AsyncSession, account_id: int) -> Account:
    with _errors():
        return await queries.account_by_id(session, account_id=account_id)
