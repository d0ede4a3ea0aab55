"""Real servers for every test: the OpenAI and Graph simulators and Parley itself, each a
uvicorn server on loopback in its own thread, talking real HTTP; and the store and queue on
both backends, SQLite with the in-process queue and PostgreSQL with Redis.

PostgreSQL and Redis are the ones `PARLEY_TEST_DATABASE_URL` / `PARLEY_TEST_REDIS_URL` name
(CI starts them), or throwaway servers started here. `PARLEY_TEST_BACKENDS=sqlite` runs only the
embedded mode; a missing server is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from parley.app import create_app
from parley.config import Settings
from parley.store.migrate import upgrade
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread, echo_reply
from tests.factories import APP_SECRET, INSTAGRAM_APP_SECRET, VERIFY_TOKEN
from tests.servers import PostgresServer, RedisServer

WHATSAPP_TOKEN = "test-whatsapp-token"
INSTAGRAM_TOKEN = "test-instagram-token"
MESSENGER_TOKEN = "test-messenger-page-token"
ADMIN_TOKEN = "test-admin-token"
BACKENDS = os.environ.get("PARLEY_TEST_BACKENDS", "sqlite,postgres").split(",")
# pytest-xdist runs the suite in several processes ("gw0", "gw1", …) on the same PostgreSQL
# and Redis: each keeps to a template database and a Redis database of its own, so that one
# process never drops the template another is copying, nor flushes another's queue.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEMPLATE_DB = f"parley_template_{XDIST_WORKER}" if XDIST_WORKER else "parley_template"
_database_numbers = itertools.count(1)


# --- upstream simulators ------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_server() -> Iterator[tuple[OpenAISimulator, ServerThread]]:
    sim = OpenAISimulator()
    server = ServerThread(sim.app)
    server.start()
    yield sim, server
    server.stop()


@pytest.fixture(scope="session")
def graph_server() -> Iterator[tuple[GraphSimulator, ServerThread]]:
    sim = GraphSimulator()
    server = ServerThread(sim.app)
    server.start()
    yield sim, server
    server.stop()


@pytest.fixture(scope="session")
def instagram_server() -> Iterator[tuple[GraphSimulator, ServerThread]]:
    """graph.instagram.com, where Instagram Login accounts send: a host of its own."""
    sim = GraphSimulator(instagram_login=True)
    server = ServerThread(sim.app)
    server.start()
    yield sim, server
    server.stop()


@pytest.fixture
def openai_sim(openai_server: tuple[OpenAISimulator, ServerThread]) -> Iterator[OpenAISimulator]:
    """The session's OpenAI simulator, with no records, faults or settings left by others."""
    sim, _ = openai_server
    sim.reset()
    yield sim
    sim.reset()
    sim.latency = sim.stream_delay = 0.0
    sim.reply, sim.tool_calls, sim.context_window = echo_reply, None, None


@pytest.fixture
def graph_sim(graph_server: tuple[GraphSimulator, ServerThread]) -> Iterator[GraphSimulator]:
    sim, _ = graph_server
    sim.reset()
    yield sim
    sim.reset()
    sim.latency = 0.0
    sim.send_rate = None
    sim.messenger_pages = set()


@pytest.fixture
def instagram_sim(
    instagram_server: tuple[GraphSimulator, ServerThread],
) -> Iterator[GraphSimulator]:
    sim, _ = instagram_server
    sim.reset()
    yield sim
    sim.reset()
    sim.latency = 0.0


# --- PostgreSQL and Redis -----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The test Redis we started ourselves (fault tests restart it), or None when CI's is used."""
    if os.environ.get("PARLEY_TEST_REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    """This process's Redis database: number N for xdist's worker "gwN" (of the 16 a Redis
    has), so that each process flushes only its own (FLUSHDB, never FLUSHALL)."""
    url = os.environ.get("PARLEY_TEST_REDIS_URL") or (redis_server.url if redis_server else "")
    if not XDIST_WORKER:
        return url
    return urlsplit(url)._replace(path=f"/{XDIST_WORKER.removeprefix('gw')}").geturl()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer | None]:
    if os.environ.get("PARLEY_TEST_DATABASE_URL"):
        yield None
        return
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop(remove=True)


_template_ready: set[str] = set()


async def postgres_template(base: str) -> None:
    """A migrated template database, made once per run; each test gets a copy of it
    (CREATE DATABASE … TEMPLATE), far faster than migrating each time."""
    if base in _template_ready:
        return
    await _recreate_database(base, TEMPLATE_DB, template=None)
    template_url = make_url(base).set(database=TEMPLATE_DB).render_as_string(hide_password=False)
    await upgrade(template_url)
    _template_ready.add(base)


async def _admin_connection(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
        timeout=10,
    )


async def _drop_database(url: str, name: str) -> None:
    connection = await _admin_connection(url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _recreate_database(url: str, name: str, *, template: str | None) -> None:
    connection = await _admin_connection(url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await connection.close()


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The types of what the garbage collector freed in the block, collected at its end: the
    objects only a collection frees (reference cycles), whose collections pause the event
    loop."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[str] = []
    try:
        yield found
        gc.collect()
        found.extend(type(kept).__name__ for kept in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@contextlib.asynccontextmanager
async def connections_refused(url: str) -> AsyncIterator[None]:
    """PostgreSQL takes no new connection to `url`'s database and closes the ones it has, as
    when the server went away under a running process; as it was again afterwards."""
    name = make_url(url).database
    admin = await _admin_connection(url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


def postgres_base(request: pytest.FixtureRequest) -> str:
    """The URL of the PostgreSQL server the tests use: CI's, or one started for the run."""
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    return os.environ.get("PARLEY_TEST_DATABASE_URL") or (server.url if server else "")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
        return
    base = postgres_base(request)
    await postgres_template(base)
    name = f"parley_test_{os.getpid()}_{next(_database_numbers)}"
    await _recreate_database(base, name, template=TEMPLATE_DB)
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    # Dropped, not left for the end: PostgreSQL's autovacuum launcher visits every database
    # on the server, and with the thousands a run makes it took a sixth of a core.
    await _drop_database(base, name)


@pytest.fixture
async def queue_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The Redis for this test, emptied first; None for the in-process queue."""
    if backend == "sqlite":
        return None
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url, socket_timeout=5)
    await client.flushdb()
    await client.aclose()
    return url


# --- Parley -------------------------------------------------------------------------------


@pytest.fixture
def settings_env(
    openai_server: tuple[OpenAISimulator, ServerThread],
    graph_server: tuple[GraphSimulator, ServerThread],
    instagram_server: tuple[GraphSimulator, ServerThread],
    database_url: str,
    queue_url: str | None,
) -> dict[str, str]:
    """The environment a user would set to run Parley against the simulators."""
    return parley_env(
        openai_url=openai_server[1].url,
        graph_url=graph_server[1].url,
        instagram_url=instagram_server[1].url,
        database_url=database_url,
        queue_url=queue_url,
    )


def parley_env(
    *, openai_url: str, graph_url: str, instagram_url: str, database_url: str, queue_url: str | None
) -> dict[str, str]:
    """The environment of a Parley on the simulators at these URLs."""
    env = {
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{openai_url}/v1",
        "OPENAI_MAX_RETRIES": "2",
        "OPENAI_TIMEOUT": "5000",
        "OPENAI_MODEL": "gpt-5-mini",
        "GRAPH_API_BASE_URL": graph_url,
        "META_APP_SECRET": APP_SECRET,
        "INSTAGRAM_APP_SECRET": INSTAGRAM_APP_SECRET,
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
        "INSTAGRAM_API_BASE_URL": instagram_url,
        "INSTAGRAM_ACCESS_TOKEN": INSTAGRAM_TOKEN,
        "MESSENGER_ACCESS_TOKEN": MESSENGER_TOKEN,
        "PARLEY_RECONCILE_INTERVAL": "1",
        "PARLEY_RECONCILE_AFTER": "2",
        "PARLEY_SHUTDOWN_GRACE": "1",
        "PARLEY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    if queue_url:
        env["REDIS_URL"] = queue_url
    return env


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    fields: dict[str, Any] = {key.lower(): value for key, value in settings_env.items()}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class Store:
    """The store read directly, as an auditor would, on either backend."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(url, poolclass=NullPool)

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        names = {f"p{i}": value for i, value in enumerate(params)}
        for i in range(len(params)):
            sql = sql.replace("?", f":p{i}", 1)
        async with self.engine.connect() as connection:
            result = await connection.execute(text(sql), names)
            return [tuple(row) for row in result]

    async def wait_for_rows(
        self, sql: str, expected: list[tuple[Any, ...]], timeout: float = 10.0
    ) -> None:
        """Wait until `sql` returns `expected`: the store is written just after a send."""
        deadline = time.monotonic() + timeout
        while (found := await self.rows(sql)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sql!r} gave {found!r}, expected {expected!r}")
            await asyncio.sleep(0.02)

    async def wait_filed(self, timeout: float = 10.0) -> None:
        """Wait until every acknowledged webhook is filed: the 200 comes before the filing."""
        await self.wait_for_rows(
            "SELECT count(*) FROM inbox WHERE failed_at IS NULL", [(0,)], timeout
        )

    async def close(self) -> None:
        await self.engine.dispose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    await store.close()


class Parley:
    """A running Parley app on loopback, with a client for it and its store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.server = ServerThread(create_app(settings, "serve"), lifespan="on")

    def start(self) -> None:
        self.server.start()
        self.client = httpx.AsyncClient(base_url=self.server.url, timeout=10)

    async def stop(self) -> None:
        await self.client.aclose()
        self.server.stop()

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self.store.rows(sql, *params)

    async def wait_for_rows(
        self, sql: str, expected: list[tuple[Any, ...]], timeout: float = 10.0
    ) -> None:
        await self.store.wait_for_rows(sql, expected, timeout)

    async def wait_filed(self, timeout: float = 10.0) -> None:
        await self.store.wait_filed(timeout)


@pytest.fixture
async def parley(settings: Settings, store: Store) -> AsyncIterator[Parley]:
    app = Parley(settings, store)
    app.start()
    yield app
    await app.stop()


MakeParley = Callable[..., Parley]


@pytest.fixture
async def make_parley(settings: Settings, store: Store) -> AsyncIterator[MakeParley]:
    """Start a Parley whose settings differ from the test's by the keyword arguments."""
    started: list[Parley] = []

    def make(**changes: Any) -> Parley:
        app = Parley(settings.model_copy(update=changes), store)
        app.start()
        started.append(app)
        return app

    yield make
    for app in started:
        await app.stop()
