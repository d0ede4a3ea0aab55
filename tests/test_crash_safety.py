"""`parley serve` killed with SIGKILL in the middle of a burst of webhooks, then restarted on
the same SQLite file: every acknowledged message is answered exactly once, none twice."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections import Counter
from pathlib import Path

import httpx

from parley.testing import GraphSimulator, OpenAISimulator, ServerThread, SimTurn
from tests.conftest import WHATSAPP_TOKEN
from tests.factories import APP_SECRET, body_bytes, signed_headers, whatsapp_texts
from tests.test_cli import start_serve

MARK = re.compile(r"\[(c\d+-m\d+)\]")
CUSTOMERS, MESSAGES = 24, 6


def ack(turn: SimTurn) -> str:
    """Echo every message of the turn, so each send shows which messages it answered."""
    return "ack " + " ".join(turn.user_texts)


def answered(graph_sim: GraphSimulator) -> Counter[str]:
    texts = [str((r.json or {}).get("text", {}).get("body", "")) for r in graph_sim.sends]
    return Counter(mark for text in texts for mark in MARK.findall(text))


async def customer(
    client: httpx.AsyncClient, number: int, acked: list[str], half: asyncio.Event
) -> None:
    """Write like a customer: the next message only after the last one was acknowledged."""
    for m in range(MESSAGES):
        mark = f"c{number:02d}-m{m}"
        body = body_bytes(whatsapp_texts(f"346000{number:05d}", [f"[{mark}]"]))
        try:
            response = await client.post(
                "/webhooks/whatsapp", content=body, headers=signed_headers(body)
            )
        except httpx.TransportError:
            return  # killed: not acknowledged, so Meta would deliver it again
        if response.status_code != 200:
            return
        acked.append(mark)
        if len(acked) >= CUSTOMERS * MESSAGES // 2:
            half.set()


async def test_kill_9_mid_burst_then_restart_answers_every_acknowledged_message_once(
    openai_server: tuple[OpenAISimulator, ServerThread],
    graph_server: tuple[GraphSimulator, ServerThread],
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    tmp_path: Path,
) -> None:
    db = tmp_path / "parley.db"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{openai_server[1].url}/v1",
        "GRAPH_API_BASE_URL": graph_server[1].url,
        "META_APP_SECRET": APP_SECRET,
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
        "PARLEY_RECONCILE_INTERVAL": "1",
        "PARLEY_RECONCILE_AFTER": "2",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    # The model is slow before the crash, so nothing is sent yet: the test is about what was
    # acknowledged, not the Graph API call (the one window for a double send, docs/queue.md).
    openai_sim.reply, openai_sim.latency = ack, 30
    process, url = await start_serve(env, tmp_path)
    acked: list[str] = []
    half = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        burst = [asyncio.create_task(customer(client, n, acked, half)) for n in range(CUSTOMERS)]
        await asyncio.wait_for(half.wait(), timeout=60)
        process.kill()
        await process.wait()
        await asyncio.gather(*burst)
    survived = len(acked)
    with sqlite3.connect(db) as connection:
        (unfiled,) = connection.execute("SELECT count(*) FROM inbox").fetchone()
        (filed,) = connection.execute("SELECT count(*) FROM messages").fetchone()
    assert unfiled + filed >= survived  # every acknowledged body is in the file

    openai_sim.latency = 0
    process, _ = await start_serve(env, tmp_path)
    try:
        async with asyncio.timeout(60):
            # One send may answer several messages, so no send count to wait for: poll.
            while not set(acked) <= set(answered(graph_sim)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            # Nothing left to file, answer or send: a late second answer can no longer come.
            while _pending(db):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        counts = answered(graph_sim)
        assert {mark: counts[mark] for mark in acked} == dict.fromkeys(acked, 1)
        assert [mark for mark, n in counts.items() if n > 1] == []
        # Each customer's answers keep the order they wrote in.
        for n in range(CUSTOMERS):
            theirs = [m for m in counts if m.startswith(f"c{n:02d}-")]
            assert theirs == sorted(theirs)
    finally:
        process.kill()
        await process.wait()


def _pending(db: Path) -> int:
    """Inbox rows, unanswered messages and unsent replies left in Parley's file."""
    with sqlite3.connect(db) as connection:
        (count,) = connection.execute(
            "SELECT (SELECT count(*) FROM inbox WHERE failed_at IS NULL)"
            " + (SELECT count(*) FROM messages WHERE status = 'received')"
            " + (SELECT count(*) FROM outbox)"
        ).fetchone()
    return int(count)
