"""Apply Alembic migrations from code: ``parley db upgrade``, and ``parley serve`` and
``parley api`` at start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.config import async_database_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser treats % as interpolation; a password may contain one.
    config.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to `revision`; Alembic is synchronous, so it runs off the event loop."""
    await asyncio.to_thread(upgrade_sync, url, revision)


def shown_url(url: str) -> str:
    """The database URL as it may be printed: without its password, and a SQLite file by its
    absolute path, so that "no database at …" says which folder was meant."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(parsed.database).resolve()))
    return parsed.render_as_string(hide_password=True)


def database_url_problem(url: str) -> str | None:
    """Why `url` is not a database URL Parley can open, without connecting, or None."""
    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except ArgumentError:
        return (
            "DATABASE_URL is not a database URL (expected sqlite:///path/parley.db or "
            "postgresql://user:password@host:5432/parley)"
        )
    except (NoSuchModuleError, ImportError) as exc:
        return (
            f"DATABASE_URL={shown_url(url)} needs a driver Parley does not have ({exc}): use "
            "sqlite:///… or postgresql://…"
        )
    return _sqlite_folder_problem(url)


def _sqlite_folder_problem(url: str) -> str | None:
    """A SQLite file's folder must exist and be writable (for the file, its journal and WAL);
    said before connecting, because aiosqlite reports it from a thread of its own."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    folder = Path(database).expanduser().absolute().parent
    if not folder.is_dir():
        return f"DATABASE_URL={shown_url(url)}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"DATABASE_URL={shown_url(url)}: the folder {folder} is not writable"
    return None


def driver_error(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping (the statement,
    the parameters, a link), for a one-line message."""
    original = getattr(exc, "orig", None) or exc
    line = (str(original).strip().splitlines() or [""])[0]
    return f"{type(original).__name__}: {line}" if line else type(original).__name__


def sqlite_file_missing(url: str) -> bool:
    """Whether `url` names a SQLite file that does not exist (connecting would create it)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return False
    return not Path(database).expanduser().exists()


async def schema_problem(engine: AsyncEngine, url: str) -> str | None:
    """Why commands that neither create nor migrate a database cannot use this one, or None."""
    if sqlite_file_missing(url):
        return f"no Parley database at {shown_url(url)}"
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    async with engine.connect() as connection:
        current = set(await connection.run_sync(_current_heads))
    if not current:
        return f"no Parley database at {shown_url(url)}"
    if current != heads:
        return f"the database at {shown_url(url)} is not up to date"
    return None


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(connection).get_current_heads()
