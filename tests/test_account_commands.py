"""`parley accounts …` as an operator runs it, on the store DATABASE_URL names: a round trip
that never prints a secret back, a clear refusal without a database, and an account's own
prompt activated before its first message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from parley.channels.signature import sign
from parley.cli import app
from parley.observability.logging import reset_logging
from parley.store.migrate import upgrade
from parley.testing import GraphSimulator, OpenAISimulator
from tests.conftest import MakeParley, Store
from tests.factories import APP_SECRET, body_bytes, whatsapp_texts

SECRET_KEY = "cli-test-secret-key"
SHOP = "401000000000001"
TOKEN = "EAAG-cli-token-read-from-stdin"
OTHER_TOKEN = "EAAG-cli-token-from-the-environment"
SHOP_APP_SECRET = "cli-app-secret-from-the-environment"
SECRETS = (TOKEN, OTHER_TOKEN, SHOP_APP_SECRET)


@pytest.fixture
def environment(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    for key, value in {**settings_env, "PARLEY_SECRET_KEY": SECRET_KEY}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SHOP_TOKEN", OTHER_TOKEN)
    monkeypatch.setenv("SHOP_APP_SECRET", SHOP_APP_SECRET)
    yield
    reset_logging()  # the commands configure logging for their process


def invoke(*args: str, stdin: str | None = None, code: int = 0) -> str:
    """What the command printed: stdout when it succeeds (logs go to stderr), else stderr.
    Nothing it prints anywhere holds a secret."""
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    for secret in SECRETS:
        assert secret not in result.output
    return result.stdout if code == 0 else result.stderr


async def test_add_list_show_set_remove_round_trip(
    environment: None, database_url: str, store: Store
) -> None:
    await upgrade(database_url)

    added = await asyncio.to_thread(
        invoke,
        "accounts", "add", "--channel", "whatsapp", "--id", SHOP, "--name", "Shop",
        "--token", "-", "--app-secret-env", "SHOP_APP_SECRET", "--profile", "sales",
        stdin=TOKEN + "\n",
    )  # fmt: skip
    assert f"added whatsapp account {SHOP}" in added and "fingerprint" in added
    (raw,) = await store.rows("SELECT access_token, app_secret FROM accounts")
    assert raw[0] and raw[1] and TOKEN not in raw[0] and SHOP_APP_SECRET not in raw[1]

    listing = json.loads(await asyncio.to_thread(invoke, "accounts", "list", "--json"))
    assert [(a["external_id"], a["name"], a["profile"]) for a in listing] == [
        (SHOP, "Shop", "sales")
    ]
    assert listing[0]["access_token"]["set"] and listing[0]["app_secret"]["set"]
    table = await asyncio.to_thread(invoke, "accounts", "list")
    assert SHOP in table and "Shop" in table and "sales" in table
    shown = await asyncio.to_thread(invoke, "accounts", "show", f"whatsapp:{SHOP}")
    assert "uses META_VERIFY_TOKEN" in shown and "set (fingerprint" in shown

    change = ["--token-env", "SHOP_TOKEN", "--disable", "--unset", "app-secret"]
    change += ["--send-rate", "12.5", "--json"]
    changed = json.loads(await asyncio.to_thread(invoke, "accounts", "set", SHOP, *change))
    assert changed["status"] == "disabled" and changed["send_rate"] == 12.5
    assert changed["app_secret"]["set"] is False
    assert changed["access_token"]["fingerprint"] != listing[0]["access_token"]["fingerprint"]

    assert "nothing to change" in await asyncio.to_thread(invoke, "accounts", "set", SHOP, code=1)
    assert "already exists" in await asyncio.to_thread(
        invoke, "accounts", "add", "--channel", "whatsapp", "--id", SHOP, code=1
    )
    assert "unknown channel" in await asyncio.to_thread(
        invoke, "accounts", "add", "--channel", "fax", "--id", "1", code=1
    )
    assert "no account" in await asyncio.to_thread(invoke, "accounts", "show", "nope", code=1)

    removed = await asyncio.to_thread(invoke, "accounts", "remove", SHOP)
    assert "kept" in removed
    assert json.loads(await asyncio.to_thread(invoke, "accounts", "list", "--json")) == []
    everything = json.loads(await asyncio.to_thread(invoke, "accounts", "list", "--all", "--json"))
    assert [(a["external_id"], a["status"]) for a in everything] == [(SHOP, "removed")]
    assert await store.rows("SELECT access_token, app_secret FROM accounts") == [(None, None)]


def test_a_secret_without_parley_secret_key_is_refused(
    environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PARLEY_SECRET_KEY")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'keyless.db'}")
    invoke("db", "upgrade")
    refused = invoke(
        "accounts", "add", "--channel", "whatsapp", "--id", SHOP, "--token-env", "SHOP_TOKEN",
        code=1,
    )  # fmt: skip
    assert "PARLEY_SECRET_KEY is not set" in refused
    assert "empty" in invoke(
        "accounts", "add", "--channel", "whatsapp", "--id", SHOP, "--token-env", "UNSET_VAR",
        code=1,
    )  # fmt: skip


def test_without_a_database_the_commands_say_which_and_create_none(
    environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{missing}")
    refused = invoke("accounts", "list", code=1)
    assert f"no Parley database at sqlite+aiosqlite:///{missing}" in refused
    assert "parley db upgrade" in refused
    assert not missing.exists()


async def test_prompts_activate_account_before_its_first_message(
    environment: None,
    make_parley: MakeParley,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
) -> None:
    parley = make_parley(parley_secret_key=SecretStr(SECRET_KEY))  # migrates the database
    await asyncio.to_thread(
        invoke, "accounts", "add", "--channel", "whatsapp", "--id", SHOP, "--token-env",
        "SHOP_TOKEN",
    )  # fmt: skip
    await asyncio.to_thread(
        invoke, "prompts", "create", "shop", "--instructions", "Only about the shop."
    )
    activated = await asyncio.to_thread(invoke, "prompts", "activate", "shop", "--account", SHOP)
    assert "now answers with shop v1" in activated

    body = body_bytes(whatsapp_texts("34600000950", ["first message"], phone_number_id=SHOP))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)}
    response = await parley.client.post("/webhooks/whatsapp", content=body, headers=headers)
    assert response.status_code == 200
    (send,) = await graph_sim.wait_for_sends(1, timeout=10)
    assert send.path == f"/v26.0/{SHOP}/messages"
    assert send.headers["authorization"] == f"Bearer {OTHER_TOKEN}"
    assert openai_sim.response_requests[-1].json["instructions"] == "Only about the shop."
