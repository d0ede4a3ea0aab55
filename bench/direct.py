"""A turn's outcome on a SQLite file, in process: through a session (`record_turn`) against
sent whole in one trip on the line (`record_turn_directly`, `store.direct`).

Each turn stores one reply, moves the conversation's counter and adds its usage. Both are run
in alternating blocks (the machine's speed drifts), and reported as CPU and wall time per turn,
with the rows checked at the end: every turn got its own sequence number.

    python bench/direct.py --turns 1500 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parley.store.db import create_engine, create_sessionmaker
from parley.store.direct import DirectWrites
from parley.store.migrate import upgrade
from parley.store.models import Account, Message, UsageDaily
from parley.store.queries.inbound import record_inbound
from parley.store.queries.turns import Reply, record_turn, record_turn_directly
from parley.store.queries.usage import UsageAdd
from tests.factories import inbound_text

USAGE = UsageAdd(
    "m", input_tokens=3, cached_tokens=0, output_tokens=2, reasoning_tokens=0, cost_usd=None
)


async def main(turns: int, rounds: int) -> None:
    folder = tempfile.mkdtemp(prefix="parley-direct-")
    url = f"sqlite+aiosqlite:///{folder}/bench.db"
    await upgrade(url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        message = inbound_text("wamid.bench", "hi", phone="34600")
        (conversation_id,) = await record_inbound(
            session, messages=[message], correlation_id="bench"
        )
        await session.commit()
        account_id = await session.scalar(select(Account.id))
    assert account_id is not None
    direct = DirectWrites.of(engine)
    assert direct is not None and direct.ready
    outcome = {
        "conversation_id": conversation_id,
        "account_id": account_id,
        "answered": [],
        "replies": [Reply("hello")],
        "usage": USAGE,
    }

    async def in_session() -> None:
        async with sessions() as session:
            await record_turn(session, **outcome, commits=True)  # type: ignore[arg-type]

    async def sent_directly() -> None:
        await record_turn_directly(direct, sessions, **outcome)  # type: ignore[arg-type]

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "session": in_session,
        "direct": sent_directly,
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, turn in ways.items():
            for _ in range(50):  # warm
                await turn()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(turns):
                await turn()
            figures[name].append(
                ((time.process_time() - cpu) / turns, (time.perf_counter() - wall) / turns)
            )
    for name, runs in figures.items():
        cpu_us = statistics.median(c for c, _ in runs) * 1e6
        wall_us = statistics.median(w for _, w in runs) * 1e6
        print(f"{name:8s} CPU {cpu_us:6.0f} µs/turn   wall {wall_us:6.0f} µs/turn (median)")
    async with sessions() as session:
        numbers = await session.execute(
            select(func.count(), func.count(Message.sequence_no.distinct())).where(
                Message.direction == "out"
            )
        )
        stored, distinct = numbers.one()
        requests = await session.scalar(select(UsageDaily.requests))
    expected = rounds * len(ways) * (turns + 50)
    assert stored == distinct == expected == requests, (stored, distinct, expected, requests)
    print(f"rows checked: {stored} replies, each its own sequence number; usage {requests}")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1500, help="turns per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks of each, alternating")
    arguments = parser.parse_args()
    uvloop.run(main(arguments.turns, arguments.rounds))
