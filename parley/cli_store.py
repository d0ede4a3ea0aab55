"""How CLI commands other than `serve`, `api` and `demo` use the database: the one that
DATABASE_URL names, as it is. They never create or migrate one; when it is missing or behind,
they say which database and what to run, and exit with status 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings
from parley.observability.logging import configure_logging
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import database_url_problem, driver_error, schema_problem, shown_url

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def load_settings() -> Settings:
    """The environment's settings, with logging configured; a value that does not validate
    ends the command with one line naming its variable, not pydantic's report."""
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "the environment"
        fail(f"{variable}: {first['msg']}")
    configure_logging(
        settings.parley_log_level, settings.parley_log_format, settings.secret_values()
    )
    return settings


def in_store(
    work: Callable[[AsyncSession, Settings], Awaitable[T]],
    *,
    settings: Settings | None = None,
    refusals: tuple[type[Exception], ...] = (),
) -> T:
    """Run `work` in one transaction on DATABASE_URL, committed if it returns. The exceptions
    in `refusals` are our own "no" (a taken name, an unknown prompt): their message, status 1."""
    if settings is None:
        settings = load_settings()
    else:
        configure_logging(
            settings.parley_log_level, settings.parley_log_format, settings.secret_values()
        )
    problem = database_url_problem(settings.database_url)
    if problem is not None:
        fail(problem)
    try:
        return asyncio.run(_in_session(settings, work))
    except refusals as exc:
        fail(str(exc))
    except (DBAPIError, OSError) as exc:
        fail(f"cannot use the database at {shown_url(settings.database_url)}: {driver_error(exc)}")


async def _in_session(
    settings: Settings, work: Callable[[AsyncSession, Settings], Awaitable[T]]
) -> T:
    engine = create_engine(settings.database_url)
    try:
        problem = await schema_problem(engine, settings.database_url)
        if problem is not None:
            fail(f"{problem}: run `parley db upgrade` (or `parley serve`) first")
        async with create_sessionmaker(engine)() as session:
            result = await work(session, settings)
            await session.commit()
            return result
    finally:
        await engine.dispose()
