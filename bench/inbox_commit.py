"""The inbox writer's commit on a SQLite file, in process: through the engine's connection
against sent whole in one trip on the writer's own line (`append_directly`, `store.direct`).

Webhooks are appended `--together` at a time, each group waiting for its commit before the
next, as a door with a few webhooks in flight commits them (one or two a commit: status
reports come one to a webhook). The two ways run in alternating blocks (the machine's speed
drifts), reported as CPU per commit and per webhook, with the rows counted at the end.

    python bench/inbox_commit.py --webhooks 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parley.ingress.inbox import InboxWriter
from parley.store.db import create_engine
from parley.store.migrate import upgrade
from parley.store.queries.inbox import Arrival
from tests.factories import body_bytes, whatsapp_texts


async def block(writer: InboxWriter, webhooks: int, together: int, start: int) -> float:
    """CPU seconds of this process for `webhooks` appended `together` at a time."""
    body = body_bytes(whatsapp_texts("34600000001", ["a status report's size"]))
    began = time.process_time()
    for first in range(start, start + webhooks, together):
        arrivals = [Arrival("whatsapp", body, f"c{n}") for n in range(first, first + together)]
        await asyncio.gather(*(writer.append(arrival) for arrival in arrivals))
    return time.process_time() - began


async def main(webhooks: int, together: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'parley.db'}"
        await upgrade(url)
        shared = create_engine(url)
        own = create_engine(url, durable=True, ahead_of=shared)
        async with shared.connect() as connection:  # the shared line open, as in `parley serve`
            await connection.execute(text("SELECT 1"))
        writer = InboxWriter(own, max_batch=256, timeout=10)
        direct = writer._direct  # the engine's way: the same writer without it
        writer.start()
        costs: dict[str, list[float]] = {"engine": [], "direct": []}
        done = 0
        try:
            await block(writer, together * 10, together, done)  # warm-up, opens the line
            done += together * 10
            for _ in range(rounds):
                for way in costs:
                    writer._direct = direct if way == "direct" else None
                    commits = writer.commits
                    cpu = await block(writer, webhooks, together, done)
                    done += webhooks
                    costs[way].append(cpu / (writer.commits - commits))
            async with shared.connect() as connection:
                stored = await connection.scalar(text("SELECT count(*) FROM inbox"))
        finally:
            await writer.close()
            await own.dispose()
            await shared.dispose()
    for way, per_commit in costs.items():
        best = statistics.median(per_commit) * 1e6
        print(
            f"{way:6s} {best:6.0f} µs of CPU per commit ({best / together:5.0f} per webhook), "
            f"median of {rounds}: " + ", ".join(f"{c * 1e6:.0f}" for c in per_commit)
        )
    print(f"rows stored: {stored} of {done}")
    if stored != done:
        raise SystemExit("rows lost")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=3000, help="per block")
    parser.add_argument("--together", type=int, default=1, help="webhooks per commit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.webhooks, args.together, args.rounds))
