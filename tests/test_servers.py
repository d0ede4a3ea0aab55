"""The throwaway servers the tests run against: they start, answer, restart and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from parley.queue.redis import create_client
from tests.servers import PostgresServer, RedisServer, start_postgres


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path)
    server.start()
    yield server
    server.stop(remove=True)


def test_start_postgres_gives_the_parley_database(tmp_path: Path) -> None:
    url, stop = start_postgres(tmp_path)
    try:
        assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        assert url.endswith("/parley")

        async def select_one() -> int:
            connection = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                return int(await connection.fetchval("SELECT 1"))
            finally:
                await connection.close()

        assert asyncio.run(select_one()) == 1
    finally:
        stop()


async def test_postgres_keeps_its_data_over_a_restart(postgres: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres.dsn)
    await connection.execute("CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)")
    await connection.close()
    await asyncio.to_thread(postgres.restart)
    connection = await asyncpg.connect(postgres.dsn)
    assert await connection.fetchval("SELECT value FROM kept") == 7
    await connection.close()


async def test_redis_wipes_and_restarts_on_its_port(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    await asyncio.to_thread(server.start)
    client = create_client(server.url)
    try:
        await client.set("k", "v")
        await asyncio.to_thread(server.wipe)
        assert await client.get("k") is None
        await client.set("k", "v")
        port = server.port
        await asyncio.to_thread(server.restart)
        assert server.port == port
        assert await client.get("k") is None  # no persistence: a restart loses everything
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)
