"""`parley conversations …` and `parley usage` as an operator runs them, on the store
DATABASE_URL names: listings as JSON and tables, a transcript, a person taking a conversation
over, answering and handing it back, and a clear refusal without a database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from parley.cli import app
from parley.observability.logging import reset_logging
from parley.store.migrate import upgrade
from parley.store.models import UsageDaily
from tests.api.test_conversations_admin import seed
from tests.conftest import Store


@pytest.fixture
def environment(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: Rich wraps cells to fit
    yield
    reset_logging()  # the commands configure logging for their process


def invoke(*args: str, code: int = 0, stdin: str | None = None) -> str:
    """What the command printed: stdout when it succeeds, else stderr."""
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


async def run(*args: str, code: int = 0, stdin: str | None = None) -> str:
    return await asyncio.to_thread(invoke, *args, code=code, stdin=stdin)


async def as_json(*args: str) -> Any:
    return json.loads(await run(*args, "--json"))


async def test_list_and_show(environment: None, database_url: str, store: Store) -> None:
    await upgrade(database_url)
    seeded = await seed(store)

    listed = await as_json("conversations", "list")
    assert [row["id"] for row in listed["data"]] == seeded.conversations
    assert listed["next_cursor"] is None
    assert [r["id"] for r in (await as_json("conversations", "list", "--waiting"))["data"]] == [
        seeded.waiting
    ]
    human = await as_json("conversations", "list", "--mode", "human")
    assert [(r["id"], r["assignee"]) for r in human["data"]] == [(seeded.waiting, "agent")]
    found = await as_json("conversations", "list", "--search", "ANA")
    assert [r["contact_name"] for r in found["data"]] == ["Ana Lopez"]
    failed = await as_json("conversations", "list", "--failed", "--account", "messenger:7770001")
    assert [r["id"] for r in failed["data"]] == [seeded.failed]

    pages: list[int] = []
    page = await as_json("conversations", "list", "--limit", "3")
    pages += [r["id"] for r in page["data"]]
    while page["next_cursor"]:
        page = await as_json(
            "conversations", "list", "--limit", "3", "--cursor", page["next_cursor"]
        )
        pages += [r["id"] for r in page["data"]]
    assert pages == seeded.conversations

    table = await run("conversations", "list", "--channel", "whatsapp")
    assert "Ana Lopez" in table and "Bruno" in table and "Dmitri" not in table

    (bruno,) = (await as_json("conversations", "list", "-q", "bruno"))["data"]
    shown = await as_json("conversations", "show", str(bruno["id"]))
    assert shown["conversation"]["contact_name"] == "Bruno"
    priced = shown["messages"][-1]
    assert (priced["input_tokens"], priced["output_tokens"], priced["latency_ms"]) == (120, 30, 850)
    assert Decimal(priced["cost_usd"]) == Decimal("0.00012345")
    assert priced["correlation_id"] == "corr-priced"
    transcript = await run("conversations", "show", str(bruno["id"]))
    assert "a priced answer" in transcript and "120/30" in transcript

    assert "no conversation 424242" in await run("conversations", "show", "424242", code=1)
    refused = await run("conversations", "list", "--cursor", "garbage", code=1)
    assert "cursor" in refused
    assert "--mode" in await run("conversations", "list", "--mode", "robot", code=1)


async def test_take_over_reply_and_hand_back(
    environment: None, database_url: str, store: Store
) -> None:
    await upgrade(database_url)
    seeded = await seed(store)
    (bruno,) = (await as_json("conversations", "list", "-q", "bruno"))["data"]
    conversation = str(bruno["id"])

    refused = await run("conversations", "reply", conversation, "hello", code=1)
    assert "take it over first" in refused

    taken = await as_json("conversations", "takeover", conversation, "--as", "ana")
    assert (taken["assignee"], taken["withdrawn"]) == ("ana", 0)
    assert "nothing to send" in await run("conversations", "reply", conversation, " ", code=1)
    stored = await run(
        "conversations", "reply", conversation, "-", "--as", "ana", "--json", stdin="Ana here\n"
    )
    (message,) = json.loads(stored)["messages"]
    assert (message["sender"], message["operator"], message["status"], message["text"]) == (
        "operator",
        "ana",
        "queued",
        "Ana here",
    )
    assert await store.rows(
        f"SELECT count(*) FROM outbox WHERE conversation_id = {conversation}"
    ) == [(1,)]
    assert await store.rows(
        f"SELECT mode, assignee FROM conversations WHERE id = {conversation}"
    ) == [("human", "ana")]

    # Ana's conversation waits: handing it back closes what nobody answered.
    back = await as_json("conversations", "handback", str(seeded.waiting), "--as", "ana")
    assert (back["mode"], back["pending"]) == ("agent", 1)
    assert await store.rows(
        f"SELECT status FROM messages WHERE conversation_id = {seeded.waiting}"
        " AND direction = 'in' ORDER BY sequence_no"
    ) == [("answered",), ("ignored",)]
    again = await run("conversations", "handback", str(seeded.waiting), code=1)
    assert "with the agent already" in again
    assert "no conversation" in await run("conversations", "takeover", "424242", code=1)


async def test_usage(environment: None, database_url: str, store: Store) -> None:
    await upgrade(database_url)
    seeded = await seed(store)
    async with store.engine.begin() as connection:
        await connection.execute(
            insert(UsageDaily),
            [
                {
                    "day": date(2026, 11, 29),
                    "account_id": seeded.shop,
                    "model": "gpt-5-mini",
                    "requests": 3,
                    "input_tokens": 300,
                    "cached_tokens": 0,
                    "output_tokens": 90,
                    "reasoning_tokens": 0,
                    "cost_usd": Decimal("0.0012"),
                },
                {
                    "day": date(2026, 11, 30),
                    "account_id": seeded.page,
                    "model": "gpt-5",
                    "requests": 1,
                    "input_tokens": 100,
                    "cached_tokens": 10,
                    "output_tokens": 40,
                    "reasoning_tokens": 8,
                    "cost_usd": Decimal("0.0100"),
                },
            ],
        )
    rows = await as_json("usage")
    assert [(r["day"], r["model"], r["requests"]) for r in rows] == [
        ("2026-11-29", "gpt-5-mini", 3),
        ("2026-11-30", "gpt-5", 1),
    ]
    assert Decimal(rows[1]["cost_usd"]) == Decimal("0.01")
    only = await as_json("usage", "--since", "2026-11-30", "--account", "messenger:7770001")
    assert [r["account_id"] for r in only] == [seeded.page]
    table = await run("usage")
    assert "gpt-5-mini" in table and "total: 0.0112" in table
    assert "--since" in await run("usage", "--since", "last week", code=1)


def test_commands_need_an_existing_database(
    environment: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{missing}")
    for args in (("conversations", "list"), ("usage",), ("conversations", "takeover", "1")):
        refused = invoke(*args, code=1)
        assert "parley db upgrade" in refused
    assert not missing.exists()
