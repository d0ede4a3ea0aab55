"""Users of the Responses API, their bearer tokens and their write-only secrets.

A token is 32 random bytes (`pk-…`), shown once and stored as its SHA-256: being random, it
needs no slow hash, and a lookup by hash is one index probe. Its first characters are kept as
a prefix so that its owner can tell tokens apart. Functions add and flush; the caller commits.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import SecretInvalid, SecretsDisabled, TooManyTokens, UserConflict
from parley.store.crypto import SecretBox
from parley.store.models import ApiToken, User, UserSecret, utcnow
from parley.store.queries.changes import ChangeCounter

USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
"""Letters, digits and `_.@-`, not starting with `_` (kept for built-in users)."""
BUILTIN_PREFIX = "_"
"""Built-in users (`_admin`, PARLEY_ADMIN_TOKEN's) live as long as their setting does: they
cannot be suspended, demoted or deleted, and never count as the last active admin."""
TOKEN_PREFIX = "pk-"
PREFIX_LENGTH = 12
LAST_USED_EVERY = timedelta(minutes=1)
"""How stale `last_used_at` may get: a write per minute per token, not one per request."""
AUTH_CHANGES = ChangeCounter("auth")
"""Who may call: a token revoked, a user suspended, reactivated, made or unmade admin, deleted
(`api.auth` caches callers under it)."""


def auth_generation() -> int:
    return AUTH_CHANGES.generation()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token's row and its value, which exists only here and is shown once."""

    row: ApiToken
    value: str


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """What a valid token says about its caller."""

    token_id: int
    user_id: int
    name: str
    is_admin: bool


# --- users ------------------------------------------------------------------------------------


async def create_user(
    session: AsyncSession, *, name: str, is_admin: bool = False
) -> tuple[User, IssuedToken]:
    """A new active user with a first token. Raises UserConflict when the name is taken."""
    if await user_by_name(session, name=name) is not None:
        raise UserConflict(f"a user named {name!r} already exists")
    user = User(name=name, is_admin=is_admin, status="active")
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # another request took the name in between
        raise UserConflict(f"a user named {name!r} already exists") from exc
    return user, await issue_token(session, user_id=user.id, name="default")


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.id)))


async def user_by_id(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def user_by_name(session: AsyncSession, *, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


def is_builtin(user: User) -> bool:
    return user.name.startswith(BUILTIN_PREFIX)


def _keep_builtin(user: User, change: str) -> None:
    if is_builtin(user):
        raise UserConflict(
            f"{user.name!r} is built in (PARLEY_ADMIN_TOKEN's user) and cannot be {change}; "
            "unset PARLEY_ADMIN_TOKEN to disable it"
        )


async def set_status(session: AsyncSession, *, user: User, status: str) -> User:
    """Suspend (``suspended``: every token refused) or reactivate (``active``) a user."""
    if status != "active":
        _keep_builtin(user, "suspended")
        await _keep_an_admin(session, user)
    AUTH_CHANGES.mark(session)
    user.status = status
    await session.flush()
    return user


async def set_admin(session: AsyncSession, *, user: User, is_admin: bool) -> User:
    if not is_admin:
        _keep_builtin(user, "demoted")
        await _keep_an_admin(session, user)
    AUTH_CHANGES.mark(session)
    user.is_admin = is_admin
    await session.flush()
    return user


async def delete_user(session: AsyncSession, *, user: User) -> None:
    """Delete the user with their tokens, secrets and usage rows (the foreign keys cascade)."""
    _keep_builtin(user, "deleted")
    await _keep_an_admin(session, user)
    AUTH_CHANGES.mark(session)
    await session.execute(delete(User).where(User.id == user.id))


async def _keep_an_admin(session: AsyncSession, user: User) -> None:
    """Refuse to take away the last active admin. The active admins' rows are locked (on
    PostgreSQL; SQLite has one writer) so two admins removed at once cannot both pass.
    Built-in users do not count: `_admin` exists only while PARLEY_ADMIN_TOKEN is set."""
    if not (user.is_admin and user.status == "active"):
        return
    admins = select(User.id).where(
        User.is_admin.is_(True),
        User.status == "active",
        ~User.name.startswith(BUILTIN_PREFIX, autoescape=True),
    )
    others = [i for i in await session.scalars(admins.with_for_update()) if i != user.id]
    if not others:
        raise UserConflict(f"{user.name!r} is the last active admin; make another admin first")


# --- tokens -----------------------------------------------------------------------------------


async def issue_token(
    session: AsyncSession, *, user_id: int, name: str | None, limit: int | None = None
) -> IssuedToken:
    """A new token for the user. With `limit`, raises TooManyTokens when the user already has
    that many live (unrevoked) tokens; the user's row is locked (on PostgreSQL) so two requests
    at once cannot both pass."""
    if limit is not None:
        await session.execute(select(User.id).where(User.id == user_id).with_for_update())
        live = await session.scalar(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        )
        if (live or 0) >= limit:
            raise TooManyTokens(
                f"this user already has {live} live API tokens, the most allowed "
                f"(PARLEY_MAX_TOKENS_PER_USER={limit}); revoke one first"
            )
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user_id, name=name, prefix=value[:PREFIX_LENGTH], token_hash=hash_token(value)
    )
    session.add(row)
    await session.flush()
    return IssuedToken(row=row, value=value)


async def list_tokens(session: AsyncSession, *, user_id: int) -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
    return list(await session.scalars(query))


async def find_tokens(session: AsyncSession, *, user_id: int, ref: str) -> list[ApiToken]:
    """The user's tokens whose id is `ref` or whose prefix starts with it."""
    match = ApiToken.prefix.startswith(ref, autoescape=True)
    if ref.isdigit():
        match = or_(match, ApiToken.id == int(ref))
    query = select(ApiToken).where(ApiToken.user_id == user_id, match).order_by(ApiToken.id)
    return list(await session.scalars(query))


async def revoke_token(session: AsyncSession, *, user_id: int, token_id: int) -> ApiToken | None:
    """Revoke one of the user's tokens (again is a no-op); None when it is not theirs."""
    row = await session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
    )
    if row is not None and row.revoked_at is None:
        AUTH_CHANGES.mark(session)
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def authenticate(
    session: AsyncSession, *, token: str, now: datetime | None = None
) -> TokenOwner | None:
    """The owner of a live token of an active user, or None. Marks the token used when its
    `last_used_at` is over a minute old."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(ApiToken.id, ApiToken.last_used_at, User.id, User.name, User.is_admin)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.token_hash == hash_token(token),
                ApiToken.revoked_at.is_(None),
                User.status == "active",
            )
        )
    ).one_or_none()
    if row is None:
        return None
    token_id, last_used, user_id, name, is_admin = row
    if last_used is None or now - last_used >= LAST_USED_EVERY:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    return TokenOwner(token_id=token_id, user_id=user_id, name=name, is_admin=is_admin)


async def token_owner(session: AsyncSession, *, token_id: int) -> TokenOwner | None:
    """The owner of the token with this id while it is live and its user active, or None:
    what a signed-in session re-checks on each request, so that revoking the token or
    suspending the user ends it."""
    row = (
        await session.execute(
            select(ApiToken.id, User.id, User.name, User.is_admin)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.id == token_id,
                ApiToken.revoked_at.is_(None),
                User.status == "active",
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return TokenOwner(token_id=row[0], user_id=row[1], name=row[2], is_admin=row[3])


async def ensure_user(session: AsyncSession, *, name: str, is_admin: bool) -> User:
    """The user with this name, created (without a token) if missing."""
    user = await user_by_name(session, name=name)
    if user is not None:
        return user
    try:
        async with session.begin_nested():
            user = User(name=name, is_admin=is_admin, status="active")
            session.add(user)
    except IntegrityError:  # created by a concurrent request just now
        user = await user_by_name(session, name=name)
        assert user is not None
    return user


# --- secrets ----------------------------------------------------------------------------------


def _box(box: SecretBox | None) -> SecretBox:
    if box is None:
        raise SecretsDisabled("secrets need PARLEY_SECRET_KEY to be set")
    return box


async def set_secret(
    session: AsyncSession, *, user_id: int, name: str, value: str, box: SecretBox | None
) -> UserSecret:
    """Store (or replace) the user's secret, encrypted. Raises SecretInvalid when the value
    holds a control character (it would go into an HTTP header: CR/LF could split it), and
    SecretsDisabled with no key."""
    check_secret_value(value)
    ciphertext = _box(box).encrypt(value)
    row = await session.scalar(
        select(UserSecret).where(UserSecret.user_id == user_id, UserSecret.name == name)
    )
    if row is None:
        row = UserSecret(user_id=user_id, name=name, ciphertext=ciphertext)
        session.add(row)
    else:
        row.ciphertext = ciphertext
    await session.flush()
    return row


def has_control_character(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)


def check_secret_value(value: str) -> None:
    """Raise SecretInvalid, naming the rule and never the value, on a control character."""
    if has_control_character(value):
        raise SecretInvalid(
            "a secret's value may not contain control characters (such as CR, LF, tab or NUL)"
        )


async def secret_names(session: AsyncSession, *, user_id: int) -> list[UserSecret]:
    """The user's secrets' rows, for their names and dates; callers never return ciphertext."""
    query = select(UserSecret).where(UserSecret.user_id == user_id).order_by(UserSecret.name)
    return list(await session.scalars(query))


async def delete_secret(session: AsyncSession, *, user_id: int, name: str) -> bool:
    result = await session.execute(
        delete(UserSecret).where(UserSecret.user_id == user_id, UserSecret.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


async def read_secrets(
    session: AsyncSession, *, user_id: int, names: set[str], box: SecretBox | None
) -> dict[str, str]:
    """The user's secrets among `names`, decrypted; missing names are left out.
    Raises SecretsDisabled with no key, SecretUnreadable when the key changed."""
    opened = _box(box)
    rows = await session.execute(
        select(UserSecret.name, UserSecret.ciphertext).where(
            UserSecret.user_id == user_id, UserSecret.name.in_(sorted(names))
        )
    )
    return {name: opened.decrypt(ciphertext) for name, ciphertext in rows}
