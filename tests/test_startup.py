"""`parley serve`, `api` and `worker` refuse to start without what they need: a real process,
a clean environment, and one line on stderr that names the variable, with no traceback."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from parley.store.db import create_engine
from parley.store.migrate import schema_problem, sqlite_file_missing, upgrade
from parley.testing import wait_until_ready
from tests.conftest import _drop_database, _recreate_database, postgres_base
from tests.servers import free_port

PARLEY = str(Path(sys.executable).with_name("parley"))
LOCAL_UPSTREAM = "http://127.0.0.1:9/v1"
"""A loopback upstream, which may go without OPENAI_API_KEY (nothing is called at start)."""


def clean_env(**variables: str) -> dict[str, str]:
    """Only what a shell gives and what the test sets: nothing of the test run's own Parley
    settings leaks in (the folder it runs in has no .env either)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **variables}


async def run(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        PARLEY,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode(), time.monotonic() - started


async def refused(env: dict[str, str], cwd: Path, *args: str, naming: str) -> str:
    """The one line the command exited with, after checking how it exited."""
    code, stderr, _ = await run(env, cwd, *args)
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and naming in lines[0], stderr
    return lines[0]


@pytest.fixture
async def migrated(tmp_path: Path) -> str:
    """A migrated SQLite database, as `parley db upgrade` leaves it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await upgrade(url)
    return url


@pytest.mark.parametrize("command", ["serve", "api", "worker"])
async def test_no_upstream_key(command: str, tmp_path: Path, migrated: str) -> None:
    env = clean_env(DATABASE_URL=migrated)
    line = await refused(env, tmp_path, command, naming="OPENAI_API_KEY")
    assert "https://api.openai.com/v1" in line


async def test_a_local_upstream_needs_no_key_but_a_public_one_does(
    tmp_path: Path, migrated: str
) -> None:
    public = clean_env(DATABASE_URL=migrated, OPENAI_BASE_URL="https://llm.example.com/v1")
    await refused(public, tmp_path, "worker", naming="OPENAI_API_KEY")
    local = clean_env(
        DATABASE_URL=migrated, OPENAI_BASE_URL=LOCAL_UPSTREAM, WHATSAPP_ACCESS_TOKEN="t"
    )
    # Past the upstream, the next thing missing is named: the key was not.
    await refused(local, tmp_path, "worker", naming="META_APP_SECRET")


@pytest.mark.parametrize(
    ("token", "naming"),
    [
        ("WHATSAPP_ACCESS_TOKEN", "META_APP_SECRET is not set"),
        ("MESSENGER_ACCESS_TOKEN", "META_APP_SECRET is not set"),
        ("INSTAGRAM_ACCESS_TOKEN", "INSTAGRAM_APP_SECRET (or META_APP_SECRET) is not set"),
    ],
)
async def test_an_answering_channel_without_its_secret(
    token: str, naming: str, tmp_path: Path, migrated: str
) -> None:
    env = clean_env(DATABASE_URL=migrated, OPENAI_API_KEY="sk-test", **{token: "t"})
    line = await refused(env, tmp_path, "api", naming=naming)
    assert token in line


async def test_accounts_added_without_their_own_secret_need_the_default(
    tmp_path: Path, migrated: str
) -> None:
    """No channel token in the environment: the accounts added decide."""
    env = clean_env(
        DATABASE_URL=migrated,
        OPENAI_BASE_URL=LOCAL_UPSTREAM,
        PARLEY_SECRET_KEY="startup-test-key",
        PAGE_TOKEN="a-page-token",
        OWN_SECRET="an-app-secret-of-its-own",
    )
    add = ("accounts", "add", "--channel", "messenger", "--token-env", "PAGE_TOKEN")
    code, stderr, _ = await run(env, tmp_path, *add, "--id", "501")
    assert code == 0, stderr
    line = await refused(env, tmp_path, "worker", naming="META_APP_SECRET is not set")
    assert "1 enabled account(s)" in line

    # Once the account signs with a secret of its own, nothing else is needed: it starts.
    code, stderr, _ = await run(
        env, tmp_path, "accounts", "set", "messenger:501", "--app-secret-env", "OWN_SECRET"
    )
    assert code == 0, stderr
    await started_then_stopped(env, tmp_path, "worker")


async def started_then_stopped(env: dict[str, str], cwd: Path, *args: str) -> None:
    log = cwd / "worker.log"
    with log.open("wb") as handle:
        process = await asyncio.create_subprocess_exec(
            PARLEY, *args, env=env, cwd=cwd, stdout=handle, stderr=handle
        )
    try:
        deadline = time.monotonic() + 30
        while "worker.started" not in log.read_text():
            assert process.returncode is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
    assert process.returncode == 0, log.read_text()


@pytest.mark.parametrize(
    ("url", "naming"),
    [
        ("nonsense", "DATABASE_URL is not a database URL"),
        ("mysql://parley:hunter2@db/parley", "DATABASE_URL=mysql://parley:***@db/parley"),
        ("sqlite:////no/such/folder/parley.db", "the folder /no/such/folder does not exist"),
    ],
)
async def test_a_database_url_that_cannot_work(url: str, naming: str, tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=url, OPENAI_API_KEY="sk-test")
    line = await refused(env, tmp_path, "serve", naming=naming)
    assert "hunter2" not in line


async def test_a_database_that_is_not_there(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    url = f"postgresql://parley:hunter2@127.0.0.1:{port}/parley"
    env = clean_env(DATABASE_URL=url, OPENAI_API_KEY="sk-test")
    line = await refused(env, tmp_path, "api", naming="DATABASE_URL=postgresql+asyncpg://")
    assert "parley:***@" in line and "hunter2" not in line
    assert "psycopg" not in line  # the URL as written meant asyncpg


async def test_wrong_credentials_and_a_database_not_migrated(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    env = clean_env(OPENAI_API_KEY="sk-test")
    not_migrated = database_url  # SQLite: a file no one created yet
    if backend == "postgres":
        stranger = make_url(database_url).set(username="nobody_here", password="hunter2")
        env["DATABASE_URL"] = stranger.render_as_string(hide_password=False)
        line = await refused(env, tmp_path, "worker", naming="DATABASE_URL=")
        assert "nobody_here" in line and "hunter2" not in line
        # The server's own database, as a hosting provider writes its URL: reachable, but
        # with no Parley tables.
        server = make_url(database_url).set(database="postgres")
        not_migrated = server.render_as_string(hide_password=False).replace(
            "postgresql+asyncpg://", "postgres://"
        )
    env["DATABASE_URL"] = not_migrated
    # `api` migrates a database that is there (below), but never creates a SQLite file.
    line = await refused(env, tmp_path, "worker", naming="no Parley database")
    assert "parley db upgrade" in line
    if backend == "sqlite":
        line = await refused(env, tmp_path, "api", naming="no Parley database")
        assert "parley db upgrade" in line
        assert sqlite_file_missing(database_url)  # `api` created no file


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_api_processes_started_together_migrate_a_new_database_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base = postgres_base(request)
    name = f"parley_fresh_{os.getpid()}"
    await _recreate_database(base, name, template=None)
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    env = clean_env(DATABASE_URL=url, OPENAI_BASE_URL=LOCAL_UPSTREAM)
    ports = [free_port() for _ in range(4)]
    processes = [
        await asyncio.create_subprocess_exec(
            PARLEY,
            "api",
            "--port",
            str(port),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        ready = await asyncio.gather(
            *(
                wait_until_ready(f"http://127.0.0.1:{port}", alive=lambda p=p: p.returncode is None)
                for port, p in zip(ports, processes, strict=True)
            )
        )
        errors = [
            (await p.stderr.read()).decode()[-2000:]
            for p in processes
            if p.returncode is not None and p.stderr is not None
        ]
        assert all(ready), errors
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        await asyncio.gather(*(asyncio.wait_for(p.wait(), timeout=30) for p in processes))
    engine = create_engine(url)
    try:
        # At the migrations' heads: the worker, which does not migrate, takes it as it is.
        assert await schema_problem(engine, url) is None
    finally:
        await engine.dispose()
        await _drop_database(base, name)


async def test_redis_that_does_not_answer(tmp_path: Path, migrated: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = clean_env(DATABASE_URL=migrated, OPENAI_API_KEY="sk-test", REDIS_URL=url)
    code, stderr, took = await run(env, tmp_path, "worker")
    assert code != 0 and "Traceback" not in stderr, stderr
    (line,) = stderr.strip().splitlines()
    assert "REDIS_URL=redis://:***@127.0.0.1" in line and "hunter2" not in line
    assert 3 < took < 20  # a short, bounded retry: not at once, not for ever


async def test_a_value_that_does_not_validate(tmp_path: Path) -> None:
    env = clean_env(OPENAI_API_KEY="sk-test", OPENAI_TIMEOUT="soon")
    await refused(env, tmp_path, "serve", naming="OPENAI_TIMEOUT")
