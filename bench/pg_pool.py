"""PostgreSQL: the client's CPU per transaction through Parley's engine, against the same
engine as Parley made it before (a ping at every checkout, no prepared-statement cache).

    python bench/pg_pool.py --database-url postgresql+asyncpg://user@host:5432/postgres

A turn's shape of transaction (a SELECT, an INSERT … RETURNING, an UPDATE, then COMMIT) on a
scratch table, `--callers` at once over a pool of 20, `--transactions` per run; the runs
alternate between the two engines `--rounds` times, and each prints this process's CPU per
transaction (the engine's and the driver's work: what a `parley worker` spends per
statement) and the transactions a second. The table is made in a fresh database on that
server and dropped with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from parley.store.db import create_engine

SETUP = "CREATE TABLE rows (id serial PRIMARY KEY, conversation int NOT NULL, body text)"
SELECT = text("SELECT id, body FROM rows WHERE conversation = :c ORDER BY id DESC LIMIT 5")
INSERT = text("INSERT INTO rows (conversation, body) VALUES (:c, :b) RETURNING id")
UPDATE = text("UPDATE rows SET body = :b WHERE id = :id")


def before(url: str) -> AsyncEngine:
    """The engine as Parley made it until 2026-12-02."""
    return create_async_engine(
        url,
        pool_size=20,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=30,
        connect_args={"statement_cache_size": 0, "command_timeout": 30},
    )


async def transaction(engine: AsyncEngine, n: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(SELECT, {"c": n % 100})
        new = (await connection.execute(INSERT, {"c": n % 100, "b": f"m{n}"})).scalar_one()
        await connection.execute(UPDATE, {"b": f"m{n}!", "id": new})


async def run(engine: AsyncEngine, transactions: int, callers: int) -> tuple[float, float]:
    counter = iter(range(transactions))

    async def caller() -> None:
        for n in counter:
            await transaction(engine, n)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / transactions * 1000, transactions / wall


async def main(url: str, transactions: int, callers: int, rounds: int) -> None:
    from tests.conftest import _admin_connection, _recreate_database

    name = f"parley_bench_pool_{os.getpid()}"
    await _recreate_database(url, name, template=None)
    scratch = make_url(url).set(database=name).render_as_string(hide_password=False)
    engines = {"before": before(scratch), "now": create_engine(scratch)}
    try:
        async with engines["now"].begin() as connection:
            await connection.execute(text(SETUP))
        for engine in engines.values():  # warm: connections opened, statements seen once
            await run(engine, 200, callers)
        for round_ in range(1, rounds + 1):
            for label, engine in engines.items():
                ms, rate = await run(engine, transactions, callers)
                print(f"round {round_} {label:6} {ms:.3f} ms CPU per transaction, {rate:,.0f}/s")
    finally:
        for engine in engines.values():
            await engine.dispose()
        admin = await _admin_connection(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.database_url, args.transactions, args.callers, args.rounds))
