"""The `parley` command as a user runs it: a real process, real signals, a real SQLite file."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from parley import cli
from parley.config import Settings
from parley.testing import GraphSimulator, OpenAISimulator, wait_until_ready
from tests.conftest import Parley, Store
from tests.console.helpers import new_user
from tests.factories import body_bytes, signed_headers, whatsapp_texts
from tests.servers import free_port

PARLEY = str(Path(sys.executable).with_name("parley"))


async def start_serve(
    env: dict[str, str], cwd: Path, command: str = "serve", *, keep_logs: bool = True
) -> tuple[asyncio.subprocess.Process, str]:
    """`parley serve` (or `parley api`) on a free port, once it answers `/readyz`. With
    `keep_logs`, its stderr is a pipe for the test to read: only for short-lived processes,
    since a pipe nobody reads fills up and then blocks the process's logging. Otherwise it
    goes to a file in `cwd`, whose end a failed start reports."""
    port = free_port()
    log = cwd / f"parley-{command}-{port}.log"
    with log.open("wb") as written:
        process = await asyncio.create_subprocess_exec(
            PARLEY,
            command,
            "--port",
            str(port),
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if keep_logs else written,
        )
    url = f"http://127.0.0.1:{port}"
    if await wait_until_ready(url, alive=lambda: process.returncode is None):
        return process, url
    if process.returncode is None:
        process.kill()
    code = await asyncio.wait_for(process.wait(), timeout=10)
    logs = log.read_text(errors="replace")[-4000:]
    raise AssertionError(f"parley {command} did not become ready (exit {code}):\n{logs}")


async def stopped_cleanly(process: asyncio.subprocess.Process) -> None:
    """Exited by itself after closing the runtime. Uvicorn re-raises the signal it handled
    once it has shut down, so the exit status is that signal's."""
    assert process.stderr is not None
    logs = (await asyncio.wait_for(process.stderr.read(), timeout=30)).decode()
    code = await asyncio.wait_for(process.wait(), timeout=5)
    assert code in (0, -signal.SIGTERM, -signal.SIGINT), logs
    assert "runtime.closed" in logs, logs


STATUSES = "SELECT direction, status FROM messages ORDER BY sequence_no"


async def test_sigterm_mid_turn_then_restart_answers_the_accepted_message(
    settings_env: dict[str, str],
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    tmp_path: Path,
    store: Store,
) -> None:
    env = {**os.environ, **settings_env}
    openai_sim.latency = 30  # the model is still thinking when the operator stops Parley
    process, url = await start_serve(env, tmp_path)
    body = body_bytes(whatsapp_texts("34600000071", ["answer me after the restart"]))
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
    assert response.status_code == 200
    await openai_sim.wait_for_requests(1, timeout=10)  # the turn is waiting on the model

    process.send_signal(signal.SIGTERM)
    await stopped_cleanly(process)
    assert await store.rows(STATUSES) == [("in", "received")]
    assert graph_sim.sends == []

    openai_sim.latency = 0
    process, _ = await start_serve(env, tmp_path)
    try:
        await graph_sim.wait_for_sends(1, timeout=15)
        assert graph_sim.texts_to("34600000071") == ["Echo: answer me after the restart"]
        await store.wait_for_rows(STATUSES, [("in", "answered"), ("out", "sent")])
    finally:
        process.send_signal(signal.SIGINT)
        await stopped_cleanly(process)


async def test_the_served_app_believes_a_trusted_proxys_headers(
    settings_env: dict[str, str], tmp_path: Path, store: Store
) -> None:
    """`parley serve` believes the proxy headers of a trusted address (loopback by default,
    FORWARDED_ALLOW_IPS): behind a TLS proxy the console's cookie is Secure; a webhook POST
    with the same headers is answered as any other."""
    process, url = await start_serve({**os.environ, **settings_env}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            _, token = await new_user(client, "proxied", is_admin=True)
            https = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"}
            signed_in = await client.post(
                "/console/login", data={"token": token}, headers={**https, "origin": url}
            )
            assert signed_in.status_code == 303, signed_in.text
            flags = {p.strip().lower() for p in signed_in.headers["set-cookie"].split(";")}
            assert "secure" in flags
            plain = await client.post(
                "/console/login", data={"token": token}, headers={"origin": url}
            )
            flags = {p.strip().lower() for p in plain.headers["set-cookie"].split(";")}
            assert "secure" not in flags
            body = body_bytes(whatsapp_texts("34600000072", ["through the proxy"]))
            webhook = await client.post(
                "/webhooks/whatsapp", content=body, headers={**signed_headers(body), **https}
            )
            assert webhook.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        await stopped_cleanly(process)


async def test_db_upgrade_creates_the_core_tables(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    process = await asyncio.create_subprocess_exec(
        PARLEY, "db", "upgrade", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stdout
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"accounts", "contacts", "conversations", "messages", "outbox"} <= tables


async def run_parley(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PARLEY,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_users_create_prints_a_token_that_opens_the_api(
    settings_env: dict[str, str], parley: Parley, tmp_path: Path
) -> None:
    env = {**os.environ, **settings_env}
    code, out, _ = await run_parley(env, tmp_path, "users", "create", "alice", "--admin")
    assert code == 0, out
    token = out.splitlines()[-1]
    assert token.startswith("pk-") and " " not in token
    me = await parley.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["is_admin"] is True
    (row,) = await parley.rows("SELECT * FROM api_tokens")
    assert not any(token in str(value) for value in row)

    code, out, _ = await run_parley(env, tmp_path, "tokens", "create", "alice", "--label", "ci")
    assert code == 0
    second = out.splitlines()[-1]
    assert second.startswith("pk-") and second != token
    code, out, _ = await run_parley(env, tmp_path, "tokens", "list", "alice")
    assert second[:12] in out and second not in out and token not in out
    code, out, _ = await run_parley(env, tmp_path, "tokens", "list", "alice", "--json")
    listed = json.loads(out)
    assert [t["label"] for t in listed] == ["default", "ci"]
    assert {t["prefix"] for t in listed} == {token[:12], second[:12]}
    assert all(t["revoked_at"] is None and set(t) >= {"id", "created_at"} for t in listed)
    assert token not in out and second not in out
    code, out, _ = await run_parley(env, tmp_path, "users", "list", "--json")
    assert [(u["name"], u["role"], u["status"]) for u in json.loads(out)] == [
        ("alice", "admin", "active")
    ]
    code, out, _ = await run_parley(env, tmp_path, "users", "list")
    assert code == 0 and "alice" in out and "admin" in out and "\t" not in out

    code, _, _ = await run_parley(env, tmp_path, "tokens", "revoke", "alice", second[:12])
    assert code == 0
    refused = await parley.client.get("/v1/me", headers={"Authorization": f"Bearer {second}"})
    assert refused.status_code == 401


async def test_users_commands_refuse_clearly(
    settings_env: dict[str, str], parley: Parley, tmp_path: Path
) -> None:
    env = {**os.environ, **settings_env}
    assert (await run_parley(env, tmp_path, "users", "create", "root", "--admin"))[0] == 0
    for args, says in [
        (("users", "create", "root"), "already exists"),
        (("users", "delete", "root"), "last active admin"),
        (("users", "suspend", "nobody"), "no user named 'nobody'"),
        (("tokens", "create", "nobody"), "no user named 'nobody'"),
        (("secrets", "set", "root", "crm", "--value", "v"), "PARLEY_SECRET_KEY"),
    ]:
        code, out, err = await run_parley(env, tmp_path, *args)
        assert code == 1, (args, out, err)
        assert says in err and "Traceback" not in err
    assert await parley.rows("SELECT name, status FROM users") == [("root", "active")]
    keyed = {**env, "PARLEY_SECRET_KEY": "cli-test-key"}
    code, _, _ = await run_parley(keyed, tmp_path, "secrets", "set", "root", "crm", "--value", "v1")
    assert code == 0
    code, out, _ = await run_parley(keyed, tmp_path, "secrets", "list", "root", "--json")
    (secret,) = json.loads(out)
    assert (
        secret["name"] == "crm"
        and "v1" not in out
        and set(secret)
        == {
            "name",
            "created_at",
            "updated_at",
        }
    )
    assert await parley.rows("SELECT count(*) FROM user_secrets WHERE ciphertext = 'v1'") == [(0,)]


async def test_commands_other_than_serve_name_the_database_and_never_create_it(
    tmp_path: Path,
) -> None:
    """A new user who runs `parley users create` before anything else is told what to run;
    no `parley.db` appears in the folder they happened to be in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    db = (tmp_path / "parley.db").resolve()  # named by its absolute path: which folder it meant
    for args in (("users", "create", "admin", "--admin"), ("users", "list", "--json")):
        code, out, err = await run_parley(env, tmp_path, *args)
        assert code == 1 and out == "", (out, err)
        assert err.strip() == (
            f"error: no Parley database at sqlite+aiosqlite:///{db}: "
            "run `parley db upgrade` (or `parley serve`) first"
        )
    assert await asyncio.to_thread(os.listdir, tmp_path) == []
    code, out, err = await run_parley(env, tmp_path, "db", "upgrade")
    assert code == 0, err
    assert out.strip() == f"database sqlite+aiosqlite:///{db} at head"
    code, out, _ = await run_parley(env, tmp_path, "users", "create", "admin", "--admin")
    assert code == 0 and out.splitlines()[-1].startswith("pk-")


def test_the_served_process_hands_the_gil_to_sqlites_threads_sooner(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`parley serve` runs with a shorter switch interval than Python's, so that SQLite's
    threads get the GIL back soon while the event loop is busy (see `_hand_over_sooner`)."""
    at_start: list[float] = []
    monkeypatch.setattr(
        cli.uvicorn, "run", lambda *_, **__: at_start.append(sys.getswitchinterval())
    )
    default = sys.getswitchinterval()
    try:
        cli._run_http(settings, "serve", "127.0.0.1", free_port())
    finally:
        sys.setswitchinterval(default)
        gc.unfreeze()
    assert at_start == [cli.SWITCH_INTERVAL]
    assert default > cli.SWITCH_INTERVAL
