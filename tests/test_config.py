"""DATABASE_URL as users write it: the forms hosting providers and `psql` print work as they
are, in the app, the CLI and Alembic alike."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from parley.config import Settings, async_database_url

PARLEY = str(Path(sys.executable).with_name("parley"))


@pytest.mark.parametrize(
    ("written", "used"),
    [
        ("postgres://u:p%40ss@db:5432/parley", "postgresql+asyncpg://u:p%40ss@db:5432/parley"),
        ("postgresql://db/parley?ssl=require", "postgresql+asyncpg://db/parley?ssl=require"),
        ("POSTGRESQL://db/parley", "postgresql+asyncpg://db/parley"),
        ("sqlite:///./parley.db", "sqlite+aiosqlite:///./parley.db"),
        ("sqlite:////var/lib/parley/parley.db", "sqlite+aiosqlite:////var/lib/parley/parley.db"),
        ("postgresql+asyncpg://db/parley", "postgresql+asyncpg://db/parley"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("  postgres://db/parley\n", "postgresql+asyncpg://db/parley"),
        ("mysql://db/parley", "mysql://db/parley"),  # not ours to fix: refused at start
    ],
)
def test_the_async_driver_is_chosen_when_none_is_named(written: str, used: str) -> None:
    assert async_database_url(written) == used
    assert Settings(_env_file=None, database_url=written).database_url == used  # type: ignore[call-arg]


def test_an_encoded_password_survives() -> None:
    url = Settings(_env_file=None, database_url="postgres://u:a%25b%40c@h/d").database_url  # type: ignore[call-arg]
    assert make_url(url).password == "a%b@c"


async def run_upgrade(url: str, cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": url}
    process = await asyncio.create_subprocess_exec(
        PARLEY,
        "db",
        "upgrade",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_db_upgrade_takes_the_plain_forms(database_url: str, tmp_path: Path) -> None:
    """`parley db upgrade` (Alembic) with the URL as a provider prints it."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite":
        plain = f"sqlite:///{parsed.database}"
    else:
        plain = parsed.set(drivername="postgres").render_as_string(hide_password=False)
    code, output = await run_upgrade(plain, tmp_path)
    assert code == 0, output
    assert "psycopg" not in output and "Traceback" not in output
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"accounts", "messages", "alembic_version"} <= tables
