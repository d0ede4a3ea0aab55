"""Accounts an operator configures (`parley accounts`, `/admin/accounts`): a WhatsApp number,
Instagram account or Facebook page with its own credentials and settings.

A configured account is one row of `accounts`, the same row its webhooks are filed under: adding
the id of a number Parley has already seen adopts that row with its conversations. Secrets are
stored encrypted with PARLEY_SECRET_KEY and leave this module only as set / not set and a keyed
fingerprint (`AccountView`). Removing an account keeps the row for audit (see `remove_account`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import (
    AccountConflict,
    AccountInvalid,
    AccountNotFound,
    SecretsDisabled,
    SecretUnreadable,
)
from parley.store.crypto import SecretBox
from parley.store.models import Account, utcnow
from parley.store.queries.changes import ChangeCounter
from parley.store.queries.responses import API_CHANNEL
from parley.store.queries.upsert import insert_ignore

log = structlog.get_logger(__name__)

EXTERNAL_ID = r"[A-Za-z0-9_.-]{1,128}"
"""A channel's id of the account: digits for Meta's, letters allowed for channels of tests."""
PROFILE = r"[A-Za-z0-9_.-]{1,64}"
SECRETS = ("access_token", "app_secret", "verify_token")
MAX_SECRET_CHARS = 4096
MAX_SEND_RATE = 10_000.0

ACCOUNT_CHANGES = ChangeCounter("accounts")
"""Bumped when a transaction that changed a configured account commits (see `changes`)."""


class Unset(Enum):
    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class AccountFields:
    """What `add_account` sets and `update_account` changes: `UNSET` leaves a field as it is,
    None clears it (a cleared secret falls back to the environment's)."""

    name: str | Unset | None = UNSET
    access_token: str | Unset | None = UNSET
    app_secret: str | Unset | None = UNSET
    verify_token: str | Unset | None = UNSET
    enabled: bool | Unset = UNSET
    profile: str | Unset | None = UNSET
    model: str | Unset | None = UNSET
    send_rate: float | Unset | None = UNSET

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not UNSET
        }

    def __repr__(self) -> str:
        # Secrets never reach a log line or a traceback through this object.
        shown = {k: ("<secret>" if k in SECRETS and v else v) for k, v in self.given().items()}
        return f"AccountFields({shown})"


@dataclass(frozen=True, slots=True)
class SecretState:
    """A stored secret as an operator may see it: whether it is set, and its fingerprint."""

    set: bool
    fingerprint: str | None = None
    """Eight hex digits keyed by PARLEY_SECRET_KEY (the same value gives the same digits);
    None when not set, or when it cannot be decrypted."""
    readable: bool = True


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    channel: str
    external_id: str
    name: str | None
    status: str
    """``active``, ``disabled``, ``removed``, or ``unconfigured`` (seen in a webhook only)."""
    enabled: bool
    profile: str | None
    model: str | None
    send_rate: float | None
    access_token: SecretState
    app_secret: SecretState
    verify_token: SecretState
    created_at: datetime
    updated_at: datetime | None
    removed_at: datetime | None


def status_of(account: Account) -> str:
    if account.removed_at is not None:
        return "removed"
    if not account.configured:
        return "unconfigured"
    return "active" if account.enabled else "disabled"


def describe(account: Account, box: SecretBox | None) -> AccountView:
    """The account as shown to operators: secrets as set / not set with a fingerprint."""
    return AccountView(
        id=account.id,
        channel=account.channel,
        external_id=account.external_id,
        name=account.name,
        status=status_of(account),
        enabled=account.enabled,
        profile=account.profile,
        model=account.model,
        send_rate=account.send_rate,
        access_token=_secret_state(account, "access_token", box),
        app_secret=_secret_state(account, "app_secret", box),
        verify_token=_secret_state(account, "verify_token", box),
        created_at=account.created_at,
        updated_at=account.updated_at,
        removed_at=account.removed_at,
    )


def _secret_state(account: Account, name: str, box: SecretBox | None) -> SecretState:
    ciphertext: str | None = getattr(account, name)
    if ciphertext is None:
        return SecretState(set=False)
    if box is None:
        return SecretState(set=True, readable=False)
    try:
        return SecretState(set=True, fingerprint=box.fingerprint(box.decrypt(ciphertext)))
    except SecretUnreadable:
        return SecretState(set=True, readable=False)


# --- reading --------------------------------------------------------------------------------


async def list_accounts(
    session: AsyncSession,
    *,
    channel: str | None = None,
    include_removed: bool = False,
    include_unconfigured: bool = False,
) -> list[Account]:
    """Configured accounts by channel and id; optionally removed ones, and rows made on first
    sight of a webhook. The Responses API's per-user accounts are never listed."""
    query = select(Account).where(Account.channel != API_CHANNEL)
    if channel is not None:
        query = query.where(Account.channel == channel)
    if not include_removed:
        query = query.where(Account.removed_at.is_(None))
    if not include_unconfigured:
        query = query.where(Account.configured.is_(True))
    return list(await session.scalars(query.order_by(Account.channel, Account.external_id)))


async def account_by_id(session: AsyncSession, *, account_id: int) -> Account:
    found = await session.get(Account, account_id)
    if found is None or found.channel == API_CHANNEL:
        raise AccountNotFound(f"no account with id {account_id}")
    return found


async def find_account(session: AsyncSession, *, ref: str) -> Account:
    """An account by ``channel:external_id``, by its channel's id (phone_number_id, page id…),
    or by Parley's own id, in that order.

    Raises:
        AccountNotFound: nothing matches.
        AccountInvalid: the channel id names accounts on more than one channel.
    """
    if ":" in ref:
        channel, external_id = ref.split(":", 1)
        found = await session.scalar(
            select(Account).where(Account.channel == channel, Account.external_id == external_id)
        )
        if found is not None and found.channel != API_CHANNEL:
            return found
        raise AccountNotFound(f"no account {ref!r}")
    matches = list(
        await session.scalars(
            select(Account).where(Account.external_id == ref, Account.channel != API_CHANNEL)
        )
    )
    if len(matches) > 1:
        channels = ", ".join(sorted(a.channel for a in matches))
        raise AccountInvalid(f"{ref!r} is an account on {channels}: name it as channel:{ref}")
    if matches:
        return matches[0]
    if ref.isdigit():
        by_id = await session.get(Account, int(ref))
        if by_id is not None and by_id.channel != API_CHANNEL:
            return by_id
    raise AccountNotFound(f"no account {ref!r} (by id, channel id or channel:id)")


# --- changing -------------------------------------------------------------------------------


async def add_account(
    session: AsyncSession,
    *,
    channel: str,
    external_id: str,
    values: AccountFields,
    box: SecretBox | None,
    channels: Collection[str],
) -> tuple[Account, bool]:
    """Configure the account `external_id` on `channel` with exactly `values` (what they leave
    out is cleared, and it is enabled unless they say otherwise).

    Returns:
        The row, and whether it existed before (seen in a webhook, or removed and now added
        again): it keeps its conversations and messages.

    Raises:
        AccountConflict: a configured account already has this id on this channel.
        AccountInvalid: an unknown channel or a malformed field.
        SecretsDisabled: a secret is given and PARLEY_SECRET_KEY is not set.
    """
    if channel not in channels:
        known = ", ".join(sorted(channels)) or "none"
        raise AccountInvalid(f"unknown channel {channel!r} (served: {known})")
    if not re.fullmatch(EXTERNAL_ID, external_id):
        raise AccountInvalid("an account id is 1-128 letters, digits or _.-")
    given = _validated(values)
    _check_box(given, box)
    account = await _locked(session, channel, external_id)
    existed = account is not None
    if account is None:
        await insert_ignore(
            session,
            Account,
            {
                "channel": channel,
                "external_id": external_id,
                "settings": {},
                "created_at": utcnow(),
                "updated_at": utcnow(),
            },
            ["channel", "external_id"],
        )
        account = await _locked(session, channel, external_id)
        assert account is not None
    elif account.configured and account.removed_at is None:
        raise AccountConflict(
            f"{channel} account {external_id} already exists (id {account.id}); "
            "change it with `set`"
        )
    for name in (*SECRETS, "name", "profile", "model", "send_rate"):
        setattr(account, name, None)
    account.enabled = True
    account.configured = True
    account.removed_at = None
    _apply(account, given, box)
    ACCOUNT_CHANGES.mark(session)
    await session.flush()
    log.info("account.added", account_id=account.id, channel=channel, adopted=existed)
    return account, existed


async def update_account(
    session: AsyncSession, *, account: Account, values: AccountFields, box: SecretBox | None
) -> Account:
    """Change the fields `values` gives. Raises as `add_account`, and `AccountNotFound` for an
    account that is removed or was never configured."""
    _require_configured(account)
    given = _validated(values)
    _check_box(given, box)
    _apply(account, given, box)
    account.updated_at = utcnow()
    ACCOUNT_CHANGES.mark(session)
    await session.flush()
    log.info("account.changed", account_id=account.id, fields=sorted(given))
    return account


async def remove_account(session: AsyncSession, *, account: Account) -> Account:
    """Stop serving the account: its credentials are erased and its webhooks are stored but
    never answered again. The row stays, with its conversations, messages and usage, for
    audit; adding the same id again serves it again, with that history."""
    _require_configured(account)
    for name in SECRETS:
        setattr(account, name, None)
    account.removed_at = utcnow()
    account.updated_at = account.removed_at
    ACCOUNT_CHANGES.mark(session)
    await session.flush()
    log.info("account.removed", account_id=account.id, channel=account.channel)
    return account


def _require_configured(account: Account) -> None:
    if account.removed_at is not None:
        raise AccountNotFound(f"account {account.id} was removed; add it again to serve it")
    if not account.configured:
        raise AccountNotFound(
            f"account {account.id} was only seen in a webhook; configure it with `add`"
        )


async def _locked(session: AsyncSession, channel: str, external_id: str) -> Account | None:
    # Two adds of one id queue here on PostgreSQL; SQLite's writers are serialised anyway.
    return await session.scalar(
        select(Account)
        .where(Account.channel == channel, Account.external_id == external_id)
        .with_for_update()
    )


def _validated(values: AccountFields) -> dict[str, Any]:
    given = values.given()
    for secret_name in SECRETS:
        secret = given.get(secret_name)
        if secret is not None and (
            not isinstance(secret, str)
            or not secret
            or len(secret) > MAX_SECRET_CHARS
            or secret != secret.strip()
        ):
            raise AccountInvalid(
                f"{secret_name} must be 1-{MAX_SECRET_CHARS} characters without surrounding spaces"
            )
    name = given.get("name")
    if name is not None and not 1 <= len(name) <= 255:
        raise AccountInvalid("name must be 1-255 characters")
    profile = given.get("profile")
    if profile is not None and not re.fullmatch(PROFILE, profile):
        raise AccountInvalid("profile must be 1-64 letters, digits or _.-")
    model = given.get("model")
    if model is not None and not 1 <= len(model) <= 128:
        raise AccountInvalid("model must be 1-128 characters")
    rate = given.get("send_rate")
    if rate is not None and not 0 < rate <= MAX_SEND_RATE:
        raise AccountInvalid(f"send_rate must be above 0 and at most {MAX_SEND_RATE:g} per second")
    return given


def _check_box(given: dict[str, Any], box: SecretBox | None) -> None:
    if box is None and any(given.get(name) for name in SECRETS):
        raise SecretsDisabled(
            "PARLEY_SECRET_KEY is not set: set it to store an account's token or secrets "
            "(they are encrypted with it)"
        )


def _apply(account: Account, given: dict[str, Any], box: SecretBox | None) -> None:
    for name, value in given.items():
        if name in SECRETS and value is not None:
            assert box is not None
            setattr(account, name, box.encrypt(value))
        else:
            setattr(account, name, value)
