"""The double-send window under load: per reply, the time from the Graph API accepting it to
the commit that records the send (and deletes its outbox row). A sender that dies in between
leaves the row to be sent again, so this is the window docs/queue.md promises to keep short.

Scale-out (default): PostgreSQL and Redis, `--apis` API and `--workers` worker processes;
`--sqlite`: one `parley serve` on a SQLite file. The model and the Graph API are the
in-package simulators; each customer writes `--messages` messages, one after another.

Accepted at: the simulator's `answered_at` for the send. Recorded at: the timestamp of the
sender's `delivery.sent` line, written right after the commit returned, so the figure errs
long, never short. Both clocks are this machine's.

    python bench/send_window.py --database-url postgresql+asyncpg://… --redis-url redis://…
    python bench/send_window.py --sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from redis import asyncio as redis
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import pct
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.conftest import TEMPLATE_DB, WHATSAPP_TOKEN, _recreate_database, postgres_template
from tests.factories import APP_SECRET
from tests.scaleout.conftest import Cluster, Process, ack, send_load, wait_all_answered
from tests.servers import free_port


def environment(openai: ServerThread, graph: ServerThread) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "DATABASE_URL", "REDIS_URL"))
    }
    return {
        **env,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{openai.url}/v1",
        "OPENAI_TIMEOUT": "10000",
        "GRAPH_API_BASE_URL": graph.url,
        "META_APP_SECRET": APP_SECRET,
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
        "PARLEY_LOG_FORMAT": "json",
    }


async def database(url: str) -> str:
    """A fresh copy of the migrated template database on the server of `url`."""
    await postgres_template(url)
    name = f"parley_send_window_{os.getpid()}"
    await _recreate_database(url, name, template=TEMPLATE_DB)
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def flush(url: str) -> None:
    """An empty Redis database, so no stream or lease of an earlier run is taken for work."""
    client = redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def start(cluster: Cluster, args: argparse.Namespace) -> None:
    if not args.sqlite:
        await cluster.start(apis=args.apis, workers=args.workers)
        return
    port = free_port()
    process = await cluster._spawn("serve", "serve", "--port", str(port))
    process.url = f"http://127.0.0.1:{port}"
    await cluster._wait_ready(process)


def recorded_at(logs: list[Process]) -> dict[str, float]:
    """Per channel message id, when its sender logged the send as recorded."""
    found: dict[str, float] = {}
    for process in logs:
        for line in process.log.read_text(errors="replace").splitlines():
            if '"delivery.sent"' not in line:
                continue
            event = json.loads(line)
            stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            found[event["channel_message_id"]] = stamp.timestamp()
    return found


def windows(graph: GraphSimulator, recorded: dict[str, float]) -> list[float]:
    """Milliseconds from accepted to recorded, per accepted send."""
    spans = []
    for send in graph.sends:
        wamid = (send.answer or {}).get("messages", [{}])[0].get("id")
        if wamid in recorded and send.answered_at is not None:
            spans.append((recorded[wamid] - send.answered_at) * 1000)
    return spans


async def run(args: argparse.Namespace) -> None:
    openai, graph = OpenAISimulator(latency=args.model_latency), GraphSimulator()
    openai.reply = ack
    graph.latency = args.graph_latency
    with tempfile.TemporaryDirectory(prefix="send-window-") as tmp:
        folder = Path(tmp)
        openai_server, graph_server = ServerThread(openai.app), ServerThread(graph.app)
        openai_server.start()
        graph_server.start()
        env = environment(openai_server, graph_server)
        if args.sqlite:
            env["DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'parley.db'}"
        else:
            env["DATABASE_URL"] = await database(args.database_url)
            env["REDIS_URL"] = args.redis_url
            await flush(args.redis_url)
        cluster = Cluster(env, folder)
        try:
            await start(cluster, args)
            load = {"conversations": args.conversations, "per_conversation": args.messages}
            await send_load(cluster, **load)
            await wait_all_answered(graph, **load, timeout=600)
        finally:
            await cluster.stop()
            openai_server.stop()
            graph_server.stop()
        spans = windows(graph, recorded_at(cluster.processes))
    mode = "sqlite serve" if args.sqlite else f"pg+redis {args.apis} api, {args.workers} workers"
    print(
        f"{mode}: {args.conversations} customers x {args.messages} messages, "
        f"{len(spans)} sends measured of {len(graph.sends)}"
    )
    print(
        f"accepted -> recorded (ms): p50 {pct(spans, 50):.1f}  p99 {pct(spans, 99):.1f}  "
        f"max {max(spans):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="one `parley serve` on SQLite")
    parser.add_argument("--database-url", default=os.environ.get("PARLEY_TEST_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("PARLEY_TEST_REDIS_URL"))
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--model-latency", type=float, default=0.3)
    parser.add_argument("--graph-latency", type=float, default=0.05)
    args = parser.parse_args()
    if not args.sqlite and not (args.database_url and args.redis_url):
        parser.error("scale-out needs --database-url and --redis-url (or --sqlite)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
