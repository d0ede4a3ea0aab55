"""Rows looked up by a pair of columns: exactly the pairs asked for, from the pair's index."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.db import create_engine
from parley.store.migrate import upgrade
from parley.store.models import Account
from parley.store.queries.pairs import pair_in, pair_params

ACCOUNTS_BY_PAIR = select(Account.channel, Account.external_id).where(
    pair_in(Account.channel, Account.external_id)
)


async def accounts(session: AsyncSession, *keys: tuple[str, str]) -> None:
    await session.execute(
        insert(Account), [{"channel": c, "external_id": e, "name": e} for c, e in keys]
    )


async def test_only_the_pairs_asked_for_not_every_combination_of_their_columns(
    session: AsyncSession,
) -> None:
    await accounts(session, ("whatsapp", "1"), ("whatsapp", "2"), ("messenger", "1"))
    await accounts(session, ("messenger", "2"), ("instagram", "1"))
    asked = {("whatsapp", "1"), ("messenger", "2"), ("whatsapp", "9")}
    rows = await session.execute(ACCOUNTS_BY_PAIR, pair_params(asked))
    # ("whatsapp", "2") and ("messenger", "1") match each column's list, not a pair.
    assert {tuple(row) for row in rows} == {("whatsapp", "1"), ("messenger", "2")}
    # The same statement, built once, with other pairs (and more of them).
    asked = {("instagram", "1"), ("messenger", "1"), ("whatsapp", "2"), ("instagram", "2")}
    rows = await session.execute(ACCOUNTS_BY_PAIR, pair_params(asked))
    assert {tuple(row) for row in rows} == {
        ("instagram", "1"),
        ("messenger", "1"),
        ("whatsapp", "2"),
    }


async def test_sqlite_searches_the_pairs_index_instead_of_scanning_the_table(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await upgrade(url)
    engine = create_engine(url)
    statement = (
        select(Account.id)
        .where(pair_in(Account.channel, Account.external_id))
        .params(pair_params([("whatsapp", "1"), ("messenger", "2")]))
    )
    sql = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    try:
        async with engine.connect() as connection:
            plan = " | ".join(
                str(row[-1]) for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            )
    finally:
        await engine.dispose()
    assert "SEARCH accounts USING" in plan and "SCAN accounts" not in plan, plan
