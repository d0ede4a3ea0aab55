"""Real servers for every test: the OpenAI and Graph simulators and Parley itself, each a
uvicorn server on loopback in its own thread, talking real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.config import Settings
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.factories import APP_SECRET, VERIFY_TOKEN

WHATSAPP_TOKEN = "test-whatsapp-token"
ADMIN_TOKEN = "test-admin-token"


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


@pytest.fixture
def openai_sim(openai_server: tuple[OpenAISimulator, ServerThread]) -> Iterator[OpenAISimulator]:
    sim, _ = openai_server
    sim.reset()
    yield sim
    sim.reset()


@pytest.fixture
def graph_sim(graph_server: tuple[GraphSimulator, ServerThread]) -> Iterator[GraphSimulator]:
    sim, _ = graph_server
    sim.reset()
    yield sim
    sim.reset()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "parley.db"


@pytest.fixture
def settings_env(
    openai_server: tuple[OpenAISimulator, ServerThread],
    graph_server: tuple[GraphSimulator, ServerThread],
    db_path: Path,
) -> dict[str, str]:
    """The environment a user would set to run Parley against the simulators."""
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{db_path}",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{openai_server[1].url}/v1",
        "OPENAI_MAX_RETRIES": "2",
        "OPENAI_TIMEOUT": "5000",
        "OPENAI_MODEL": "gpt-5-mini",
        "GRAPH_API_BASE_URL": graph_server[1].url,
        "META_APP_SECRET": APP_SECRET,
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
        "PARLEY_RECONCILE_INTERVAL": "1",
        "PARLEY_RECONCILE_AFTER": "2",
        "PARLEY_SHUTDOWN_GRACE": "1",
        "PARLEY_ADMIN_TOKEN": ADMIN_TOKEN,
    }


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    fields = {key.lower(): value for key, value in settings_env.items()}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class Parley:
    """A running Parley app on loopback, with a client for it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = ServerThread(create_app(settings, "serve"), lifespan="on")

    def start(self) -> None:
        self.server.start()
        self.client = httpx.AsyncClient(base_url=self.server.url, timeout=10)

    async def stop(self) -> None:
        await self.client.aclose()
        self.server.stop()

    async def wait_for_rows(
        self, sql: str, expected: list[tuple[Any, ...]], timeout: float = 10.0
    ) -> None:
        """Wait until `sql` returns `expected`: the store is written just after a send."""
        deadline = time.monotonic() + timeout
        while (found := self.rows(sql)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sql!r} gave {found!r}, expected {expected!r}")
            await asyncio.sleep(0.02)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the store directly, as an auditor would."""
        path = self.settings.database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture
async def parley(settings: Settings) -> AsyncIterator[Parley]:
    app = Parley(settings)
    app.start()
    yield app
    await app.stop()
