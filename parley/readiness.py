"""What a Parley process needs before it can answer anyone, in one place: checked once when
`parley serve`, `parley api` or `parley worker` starts (a problem ends the command with one line
naming the variable), and reported by `/readyz` while it runs.

- the upstream: `OPENAI_API_KEY`, unless `OPENAI_BASE_URL` is a server on this machine or this
  network (a simulator, Ollama, vLLM), which may need none;
- each channel that answers: a secret its webhooks are verified with (`META_APP_SECRET`…). A
  channel answers when its `<CHANNEL>_ACCESS_TOKEN` is set, or, once accounts were added to it
  (`parley accounts`), when one of them is enabled; it then needs the channel's default secret
  unless every such account signs with an app secret of its own (as `ingress.verification`
  checks them). A channel that answers nobody needs nothing: a deployment of WhatsApp alone, or
  of the Responses API alone, sets only what it uses;
- the database `DATABASE_URL` names, reachable with its credentials (and, for the worker,
  which does not migrate it, already migrated; `api` migrates one that exists, but never
  creates a SQLite file);
- Redis, when `REDIS_URL` is set, after a few seconds of retries (it may be starting alongside).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.channels import registry
from parley.channels.base import Channel
from parley.config import Settings
from parley.store.crypto import secret_box
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import (
    database_url_problem,
    driver_error,
    schema_problem,
    shown_url,
    sqlite_file_missing,
)
from parley.store.queries.account_directory import AccountDirectory, Directory

Role = Literal["serve", "api", "worker"]

DATABASE_TIMEOUT = 10.0
"""Seconds the start-up check gives the database to answer (asyncpg's own default is 60)."""
REDIS_WITHIN = 5.0
"""Seconds of retries before Redis counts as unreachable: long enough for a Redis started at
the same moment (compose, a pod's sidecar), short enough that a wrong port is said at once."""
REDIS_RETRY_EVERY = 0.5

OK = "ok"
OFF = "off"


# --- configuration: no I/O ------------------------------------------------------------------


def upstream_problem(settings: Settings) -> str | None:
    """Why the agent cannot reach a model with these settings, or None."""
    if settings.secret("openai_api_key") or is_local_url(settings.openai_base_url):
        return None
    return (
        f"OPENAI_API_KEY is not set: {settings.openai_base_url} needs it (only a local "
        "OPENAI_BASE_URL, such as http://localhost:11434/v1, may go without one)"
    )


def is_local_url(url: str) -> bool:
    """Whether `url`'s host is this machine or this network: a loopback, private or
    link-local address, ``localhost``, a ``.local``/``.internal`` name, or a single-label name
    such as a compose service (``http://ollama:11434/v1``)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            host == "localhost"
            or host.endswith((".localhost", ".local", ".internal"))
            or "." not in host
        )
    return address.is_loopback or address.is_private or address.is_link_local


def channel_states(settings: Settings, directory: Directory) -> dict[str, str]:
    """Per registered channel: ``ok``, ``off`` (it answers nobody), or the problem."""
    return {
        name: _channel_state(registry.get(name), settings, directory) for name in registry.names()
    }


def _channel_state(channel: Channel, settings: Settings, directory: Directory) -> str:
    reason = _needs_default_secret(channel, settings, directory)
    if reason is None:
        return OFF
    if any(_setting(settings, name) for name in channel.secret_settings):
        return OK
    first, *others = (name.upper() for name in channel.secret_settings)
    alternatives = "".join(f" (or {name})" for name in others)
    return (
        f"{first}{alternatives} is not set, so {channel.name} webhooks cannot be verified "
        f"({reason})"
    )


def _needs_default_secret(channel: Channel, settings: Settings, directory: Directory) -> str | None:
    """Why the channel's webhooks need the environment's secret, or None when they do not.

    As the webhook door decides: a channel with accounts added answers only those (each
    checked with its own app secret, else the default); one without answers every account
    with the environment's token."""
    if directory.is_configured(channel.name):
        count = sum(
            1
            for c in directory.accounts(channel.name)
            if c.enabled and not c.removed and not c.own_app_secret
        )
        if count == 0:
            return None
        return f"{count} enabled account(s) without an app secret of their own"
    token = f"{channel.name}_access_token"
    if _setting(settings, token):
        return f"{token.upper()} is set"
    return None


def _setting(settings: Settings, name: str) -> str | None:
    return settings.secret(name) if hasattr(settings, name) else None


def channel_problem(states: dict[str, str]) -> str | None:
    problems = [state for state in states.values() if state not in (OK, OFF)]
    return "; ".join(problems) or None


# --- the database and Redis ------------------------------------------------------------------


async def database_problem(engine: AsyncEngine, url: str, *, migrated: bool) -> str | None:
    """Why the process cannot use the database, naming it with its password masked, or None.
    `migrated`: it must also be a Parley database that is up to date (the worker does not
    migrate it; `serve` and `api` do)."""
    shown = shown_url(url)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            if migrated:
                problem = await schema_problem(engine, url)
                if problem is not None:
                    return f"{problem} (DATABASE_URL): run `parley db upgrade` first"
            else:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return f"the database at DATABASE_URL={shown} did not answer in {DATABASE_TIMEOUT:.0f} s"
    except (DBAPIError, OSError) as exc:
        return f"cannot use the database at DATABASE_URL={shown}: {driver_error(exc)}"
    return None


def shown_redis_url(url: str) -> str:
    """A Redis URL as it may be printed: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


async def redis_problem(url: str, *, within: float = REDIS_WITHIN) -> str | None:
    """Why Redis at `url` cannot be used, after trying for `within` seconds, or None."""
    shown = shown_redis_url(url)
    try:
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
    except ValueError as exc:
        return f"REDIS_URL={shown} is not a Redis URL ({exc})"
    deadline = time.monotonic() + within
    failure = "no answer"
    try:
        while True:
            try:
                async with asyncio.timeout(3.0):
                    if await client.ping():
                        return None
            except (RedisError, OSError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not _worth_retrying(exc):
                    break
            if time.monotonic() + REDIS_RETRY_EVERY > deadline:
                break
            await asyncio.sleep(REDIS_RETRY_EVERY)
    finally:
        await client.aclose()
    return f"cannot use Redis at REDIS_URL={shown} (tried for {within:.0f} s): {failure}"


def _worth_retrying(exc: BaseException) -> bool:
    """A wrong password or database will not fix itself; a Redis still starting will."""
    return not isinstance(exc, AuthenticationError | ResponseError)


# --- at start ---------------------------------------------------------------------------------


async def preflight(settings: Settings, role: Role) -> str | None:
    """The first reason the process cannot start with these settings, or None."""
    problem = upstream_problem(settings) or database_url_problem(settings.database_url)
    if problem is not None:
        return problem
    engine = create_engine(settings.database_url)
    try:
        # `serve` creates and migrates its database itself; `api` migrates one that exists,
        # but a SQLite file that is not there it leaves, as the worker, to be made first.
        migrated = role == "worker" or (
            role == "api" and sqlite_file_missing(settings.database_url)
        )
        problem = await database_problem(engine, settings.database_url, migrated=migrated)
        if problem is None:
            try:
                directory = await _accounts(settings, engine)
            except (DBAPIError, OSError, TimeoutError) as exc:
                return f"cannot read the accounts at DATABASE_URL: {driver_error(exc)}"
            problem = channel_problem(channel_states(settings, directory))
    finally:
        await engine.dispose()
    if problem is None and settings.redis_url:
        problem = await redis_problem(settings.redis_url)
    return problem


async def _accounts(settings: Settings, engine: AsyncEngine) -> Directory:
    """The accounts added so far; none in a database `serve` has yet to migrate."""
    async with asyncio.timeout(DATABASE_TIMEOUT):
        if await schema_problem(engine, settings.database_url) is not None:
            return Directory()
        directory = AccountDirectory(
            create_sessionmaker(engine), secret_box(settings.secret("parley_secret_key"))
        )
        try:
            return await directory.snapshot()
        finally:
            await directory.close()
