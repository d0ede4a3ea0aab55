"""The configured accounts as one process needs them on its hot paths (every webhook's
signature, every turn and send), remembered for a moment so that a webhook costs no query.

A snapshot of every configured account is read at most once per `TTL_S`, and dropped at once
when this process commits an account change (`ACCOUNT_CHANGES`); a change committed by another
process (`parley accounts`, another API process) is seen within `TTL_S` and one read. An
expired snapshot is still served while a background task reads the next one, so no webhook
waits for that read (on SQLite it queues for the shared connection behind turns). A stored secret is
decrypted once per ciphertext (the same ciphertext always means the same value).

Who answers what, in one place (`refusal`):
- a configured account answers with its own token, else the environment's default;
- a disabled or removed account is stored, never answered;
- an account Parley was never told about is served with the environment's defaults while its
  channel has no configured account, and once one exists it is stored, never answered: a
  deployment that lists its accounts never answers a stranger with another account's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import SecretsDisabled, SecretUnreadable
from parley.store.crypto import SecretBox
from parley.store.models import Account
from parley.store.queries.accounts import ACCOUNT_CHANGES

log = structlog.get_logger(__name__)

TTL_S = 1.0
MAX_DECRYPTED = 10_000

NOT_CONFIGURED = "account not configured"
DISABLED = "account disabled"
REMOVED = "account removed"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What verifying a configured account's webhooks takes."""

    account_id: int
    channel: str
    external_id: str
    enabled: bool
    removed: bool
    own_app_secret: bool
    """It signs with an app secret of its own (`app_secret`, None if that cannot be read)."""
    app_secret: str | None = field(default=None, repr=False)
    verify_token: str | None = field(default=None, repr=False)


class Directory:
    """One snapshot of the configured accounts, indexed for the webhook door."""

    def __init__(self, credentials: list[Credentials] | None = None) -> None:
        self._accounts = {(c.channel, c.external_id): c for c in credentials or []}
        self._configured = frozenset(c.channel for c in credentials or [] if not c.removed)
        self._secrets: dict[str, list[str]] = {}
        self._tokens: dict[str, list[str]] = {}
        for c in credentials or []:
            if c.app_secret and c.app_secret not in self._secrets.setdefault(c.channel, []):
                self._secrets[c.channel].append(c.app_secret)
            if c.verify_token and c.verify_token not in self._tokens.setdefault(c.channel, []):
                self._tokens[c.channel].append(c.verify_token)

    def __repr__(self) -> str:
        return f"Directory(<{len(self._accounts)} accounts>)"

    def lookup(self, channel: str, external_id: str) -> Credentials | None:
        return self._accounts.get((channel, external_id))

    def accounts(self, channel: str) -> list[Credentials]:
        """The channel's configured accounts, removed ones included."""
        return [c for (name, _), c in self._accounts.items() if name == channel]

    def is_configured(self, channel: str) -> bool:
        """Whether the channel has an account an operator added (enabled or not): then only
        its accounts are answered."""
        return channel in self._configured

    def app_secrets(self, channel: str) -> list[str]:
        """The own app secrets of the channel's accounts, each once."""
        return self._secrets.get(channel, [])

    def verify_tokens(self, channel: str) -> list[str]:
        """The own handshake tokens of the channel's accounts, each once."""
        return self._tokens.get(channel, [])


class AccountDirectory:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox | None,
        *,
        ttl: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl
        self._clock = clock
        self._snapshot: tuple[float, int, Directory] | None = None
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._plain: dict[str, str] = {}
        self._warned: set[tuple[int, str]] = set()

    async def snapshot(self) -> Directory:
        """The configured accounts as of at most `TTL_S` ago (or this process's last change)."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        stale = self._expired() if self._ttl > 0 else None  # ttl 0: always read
        if stale is not None:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.create_task(self._refresh(), name="accounts-refresh")
            return stale
        # Nothing to serve meanwhile (first use, or this process changed an account): one
        # reader refreshes, and webhooks arriving meanwhile wait for its answer.
        return await self._refresh_now()

    async def close(self) -> None:
        """Wait for a background read still running (bounded), so that none outlives the
        store's engine."""
        task = self._refreshing
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh(self) -> None:
        try:
            await self._refresh_now()
        except Exception:  # the expired snapshot goes on serving; the next call tries again
            log.warning("accounts.refresh_failed", exc_info=True)

    async def _refresh_now(self) -> Directory:
        async with self._lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            at, generation = self._clock(), ACCOUNT_CHANGES.generation()
            directory = await self._read()
            if generation == ACCOUNT_CHANGES.generation():
                self._snapshot = (at, generation, directory)
            return directory

    async def refusal(self, account: Account) -> str | None:
        """Why the account's messages must not be answered, or None when they may be."""
        if account.removed_at is not None:
            return REMOVED
        if account.configured:
            return None if account.enabled else DISABLED
        if (await self.snapshot()).is_configured(account.channel):
            return NOT_CONFIGURED
        return None

    def access_token(self, account: Account) -> str | None:
        """The account's own access token, or None when it uses the environment's.

        Raises:
            SecretsDisabled: it has one and PARLEY_SECRET_KEY is not set.
            SecretUnreadable: it has one that PARLEY_SECRET_KEY does not decrypt.
        """
        if account.access_token is None:
            return None
        if self._box is None:
            raise SecretsDisabled("the account's token is stored but PARLEY_SECRET_KEY is not set")
        return self._decrypt(account.access_token)

    def _fresh(self) -> Directory | None:
        if self._snapshot is None:
            return None
        at, generation, directory = self._snapshot
        if generation != ACCOUNT_CHANGES.generation() or self._clock() - at >= self._ttl:
            return None
        return directory

    def _expired(self) -> Directory | None:
        """The last snapshot past its time but with no change of this process since."""
        if self._snapshot is None:
            return None
        _, generation, directory = self._snapshot
        return directory if generation == ACCOUNT_CHANGES.generation() else None

    async def _read(self) -> Directory:
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        Account.id,
                        Account.channel,
                        Account.external_id,
                        Account.enabled,
                        Account.removed_at,
                        Account.app_secret,
                        Account.verify_token,
                    ).where(Account.configured.is_(True))
                )
            ).all()
        accounts = []
        for id_, channel, external_id, enabled, removed_at, app_secret, verify_token in rows:
            credentials = Credentials(
                account_id=id_,
                channel=channel,
                external_id=external_id,
                enabled=enabled,
                removed=removed_at is not None,
                own_app_secret=app_secret is not None,
                app_secret=self._readable(id_, "app_secret", app_secret),
                verify_token=self._readable(id_, "verify_token", verify_token),
            )
            accounts.append(credentials)
        return Directory(accounts)

    def _readable(self, account_id: int, name: str, ciphertext: str | None) -> str | None:
        """The plaintext, or None (logged once per account) when it cannot be decrypted: the
        account's webhooks are then refused rather than checked with another secret."""
        if ciphertext is None:
            return None
        try:
            if self._box is None:
                raise SecretsDisabled("PARLEY_SECRET_KEY is not set")
            return self._decrypt(ciphertext)
        except (SecretsDisabled, SecretUnreadable) as exc:
            if (account_id, name) not in self._warned:
                self._warned.add((account_id, name))
                log.error(
                    "account.secret_unreadable", account_id=account_id, field=name, reason=str(exc)
                )
            return None

    def _decrypt(self, ciphertext: str) -> str:
        plain = self._plain.get(ciphertext)
        if plain is None:
            assert self._box is not None
            plain = self._box.decrypt(ciphertext)
            if len(self._plain) >= MAX_DECRYPTED:
                self._plain.clear()
            self._plain[ciphertext] = plain
        return plain
