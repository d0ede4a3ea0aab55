"""Usage and cost: added up per day, account and model as turns are stored; per conversation
from the messages themselves."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import Insert

from parley.store.db import defers_next_statement
from parley.store.direct import DirectWrites, Step, step
from parley.store.models import Message, UsageDaily, UsageUserDaily, utcnow
from parley.store.queries.upsert import dialect_insert

USAGE_FIELDS = ("requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


@dataclass(frozen=True, slots=True)
class UsageAdd:
    """One upstream call's usage."""

    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal | None


async def add_usage(session: AsyncSession, *, account_id: int, usage: UsageAdd) -> None:
    """Add one call to today's row for the account and model (UTC days), in the caller's
    transaction, with one upsert, so concurrent turns never lose an increment."""
    await _add(
        await session.connection(), UsageDaily, owner={"account_id": account_id}, usage=usage
    )


async def add_user_usage(session: AsyncSession, *, user_id: int, usage: UsageAdd) -> None:
    """Add one call to today's row for the Responses API user and model, like `add_usage`."""
    connection = await session.connection()
    await _add(connection, UsageUserDaily, owner={"user_id": user_id}, usage=usage)


async def add_turn_usage(
    connection: AsyncConnection,
    *,
    account_id: int,
    user_id: int | None,
    usage: UsageAdd,
    commits: bool = False,
) -> None:
    """`add_usage` and, for a Responses API user, `add_user_usage`, on the connection of the
    transaction that stores the turn (which its caller already holds). Their outcomes are not
    read: on SQLite the account's rides with the user's upsert; with `commits` (the caller
    commits after them, with no other statement in between) the last rides with the COMMIT
    (see `store.db.defers_next_statement`)."""
    last = user_id is None
    account = {"account_id": account_id}
    await _add(connection, UsageDaily, owner=account, usage=usage, held=commits or not last)
    if user_id is not None:
        owner = {"user_id": user_id}
        await _add(connection, UsageUserDaily, owner=owner, usage=usage, held=commits)


async def _add(
    connection: AsyncConnection,
    table: type[UsageDaily] | type[UsageUserDaily],
    *,
    owner: dict[str, int],
    usage: UsageAdd,
    held: bool = False,
) -> None:
    values = _usage_values(owner, usage)
    statement = _upsert(connection.dialect.name, table, tuple(owner))
    if held:
        defers_next_statement(connection)
    await connection.execute(statement, values)


def usage_steps(
    direct: DirectWrites, *, account_id: int, user_id: int | None, usage: UsageAdd
) -> list[Step]:
    """`add_turn_usage`'s upserts as steps of a direct transaction (`store.direct`)."""
    owners: list[tuple[type[UsageDaily] | type[UsageUserDaily], dict[str, int]]]
    owners = [(UsageDaily, {"account_id": account_id})]
    if user_id is not None:
        owners.append((UsageUserDaily, {"user_id": user_id}))
    dialect = direct.dialect.name
    steps = []
    for table, owner in owners:
        keys = tuple(owner)
        upsert = direct.prepared(("usage", table), functools.partial(_upsert, dialect, table, keys))
        steps.append(step(upsert, _usage_values(owner, usage)))
    return steps


def _usage_values(owner: dict[str, int], usage: UsageAdd) -> dict[str, Any]:
    return {
        "day": utcnow().date(),
        **owner,
        "model": usage.model,
        "requests": 1,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_usd": usage.cost_usd or Decimal(0),
    }


@functools.cache
def _upsert(
    dialect: str, table: type[UsageDaily] | type[UsageUserDaily], owner: tuple[str, ...]
) -> Insert:
    """The upsert of one call's usage, built once per table: every turn runs it, and building
    the statement (an expression per added column) cost more than executing it."""
    insert = dialect_insert(dialect)
    added = (*USAGE_FIELDS, "cost_usd")
    names = ("day", *owner, "model", *added)
    statement = insert(table).values({name: bindparam(name) for name in names})
    update = {name: getattr(table, name) + statement.excluded[name] for name in added}
    keys = ["day", *owner, "model"]
    return statement.on_conflict_do_update(index_elements=keys, set_=update)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal


async def conversation_usage(session: AsyncSession, *, conversation_id: int) -> UsageTotals:
    """Totals over the conversation's agent messages (each answer's usage is on its first part)."""
    row = (
        await session.execute(
            select(
                func.count(Message.input_tokens),
                func.coalesce(func.sum(Message.input_tokens), 0),
                func.coalesce(func.sum(Message.cached_tokens), 0),
                func.coalesce(func.sum(Message.output_tokens), 0),
                func.coalesce(func.sum(Message.reasoning_tokens), 0),
                func.coalesce(func.sum(Message.cost_usd), 0),
            ).where(Message.conversation_id == conversation_id)
        )
    ).one()
    requests, input_tokens, cached, output, reasoning = (int(value or 0) for value in row[:5])
    return UsageTotals(
        requests=requests,
        input_tokens=input_tokens,
        cached_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
        cost_usd=Decimal(str(row[5])),
    )


async def daily_usage(
    session: AsyncSession,
    *,
    since: date | None = None,
    until: date | None = None,
    account_id: int | None = None,
) -> list[UsageDaily]:
    query = select(UsageDaily).order_by(UsageDaily.day, UsageDaily.account_id, UsageDaily.model)
    if since is not None:
        query = query.where(UsageDaily.day >= since)
    if until is not None:
        query = query.where(UsageDaily.day <= until)
    if account_id is not None:
        query = query.where(UsageDaily.account_id == account_id)
    return list(await session.scalars(query))


async def user_daily_usage(
    session: AsyncSession,
    *,
    since: date | None = None,
    until: date | None = None,
    user_id: int | None = None,
) -> list[UsageUserDaily]:
    """Rows per UTC day, user and model, oldest first."""
    query = select(UsageUserDaily).order_by(
        UsageUserDaily.day, UsageUserDaily.user_id, UsageUserDaily.model
    )
    if since is not None:
        query = query.where(UsageUserDaily.day >= since)
    if until is not None:
        query = query.where(UsageUserDaily.day <= until)
    if user_id is not None:
        query = query.where(UsageUserDaily.user_id == user_id)
    return list(await session.scalars(query))
