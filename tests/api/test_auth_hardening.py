"""Issue 14's hardening of users and tokens, on both backends: one rate budget per user
(in-process on SQLite, Redis on PostgreSQL), a cap on live tokens, secrets without control
characters, the built-in `_admin`, and a lock-out after failed sign-ins."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from parley.api.auth import CALLER_TTL_S
from tests.api.test_users import ADMIN, assert_openai_error, bearer, create_user
from tests.conftest import ADMIN_TOKEN, MakeParley, Parley
from tests.factories import fresh_window
from tests.test_cli import run_parley


async def admin_token(parley: Parley, user_id: int) -> str:
    response = await parley.client.post(f"/admin/users/{user_id}/tokens", headers=ADMIN)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def test_all_of_a_users_tokens_share_one_rate_budget(make_parley: MakeParley) -> None:
    parley = make_parley(parley_api_rate_limit=3)
    alice = await create_user(parley, "alice")
    first = alice["token"]["token"]
    second = await admin_token(parley, alice["id"])
    bob = (await create_user(parley, "bob"))["token"]["token"]
    await fresh_window()
    for token in (first, second, first):
        assert (await parley.client.get("/v1/me", headers=bearer(token))).status_code == 200
    limited = await parley.client.get("/v1/me", headers=bearer(second))
    error = assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert "all of the user's API keys together" in error["message"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert (await parley.client.get("/v1/me", headers=bearer(bob))).status_code == 200


async def test_live_tokens_per_user_are_capped(make_parley: MakeParley) -> None:
    parley = make_parley(parley_max_tokens_per_user=2)
    alice = await create_user(parley, "alice")
    token = alice["token"]["token"]
    minted = await parley.client.post("/v1/me/tokens", headers=bearer(token))
    assert minted.status_code == 201, minted.text
    refused = await parley.client.post("/v1/me/tokens", headers=bearer(token))
    error = assert_openai_error(refused, 409, "too_many_tokens")
    assert "PARLEY_MAX_TOKENS_PER_USER=2" in error["message"]
    by_admin = await parley.client.post(f"/admin/users/{alice['id']}/tokens", headers=ADMIN)
    assert by_admin.status_code == 409 and "revoke one" in by_admin.json()["detail"]
    assert await parley.rows("SELECT count(*) FROM api_tokens") == [(2,)]

    revoked = await parley.client.delete(
        f"/v1/me/tokens/{minted.json()['id']}", headers=bearer(token)
    )
    assert revoked.status_code == 200
    again = await parley.client.post("/v1/me/tokens", headers=bearer(token))
    assert again.status_code == 201, again.text


async def test_the_cli_caps_tokens_and_refuses_control_characters_in_secrets(
    settings_env: dict[str, str], parley: Parley, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **settings_env,
        "PARLEY_MAX_TOKENS_PER_USER": "1",
        "PARLEY_SECRET_KEY": "cli-test-key",
    }
    assert (await run_parley(env, tmp_path, "users", "create", "alice"))[0] == 0
    code, out, err = await run_parley(env, tmp_path, "tokens", "create", "alice")
    assert code == 1 and "PARLEY_MAX_TOKENS_PER_USER=1" in err, (out, err)
    code, out, err = await run_parley(
        env, tmp_path, "secrets", "set", "alice", "crm", "--value", "abc\tdef"
    )
    assert code == 1 and "control characters" in err and "abc" not in err, (out, err)
    assert await parley.rows("SELECT count(*) FROM api_tokens") == [(1,)]
    assert await parley.rows("SELECT count(*) FROM user_secrets") == [(0,)]


async def test_a_secret_with_a_control_character_is_refused(make_parley: MakeParley) -> None:
    parley = make_parley(parley_secret_key=SecretStr("test-secret-key-of-some-length"))
    token = (await create_user(parley, "alice"))["token"]["token"]
    for value in ("tok\r\nX-Injected: 1", "tok\x00", "tok\x7f"):
        refused = await parley.client.put(
            "/v1/me/secrets/crm", json={"value": value}, headers=bearer(token)
        )
        error = assert_openai_error(refused, 400, "invalid_secret")
        assert error["param"] == "value" and "control characters" in error["message"]
        assert "tok" not in error["message"]
    assert await parley.rows("SELECT count(*) FROM user_secrets") == [(0,)]
    fine = await parley.client.put(
        "/v1/me/secrets/crm", json={"value": "tok-é"}, headers=bearer(token)
    )
    assert fine.status_code == 200, fine.text


async def builtin_admin(parley: Parley) -> dict[str, Any]:
    me = await parley.client.get("/v1/me", headers=ADMIN)  # creates `_admin`
    assert me.status_code == 200, me.text
    user: dict[str, Any] = me.json()
    return user


async def test_the_builtin_admin_cannot_be_suspended_demoted_or_deleted(parley: Parley) -> None:
    admin = await builtin_admin(parley)
    path = f"/admin/users/{admin['id']}"
    for attempt in (
        parley.client.post(f"{path}/suspend", headers=ADMIN),
        parley.client.delete(path, headers=ADMIN),
        parley.client.patch(path, json={"is_admin": False}, headers=ADMIN),
    ):
        response = await attempt
        assert response.status_code == 409, response.text
        assert "built in" in response.json()["detail"]
    assert await parley.rows("SELECT name, is_admin, status FROM users") == [
        ("_admin", True, "active")
    ]
    assert (await parley.client.get("/v1/me", headers=ADMIN)).status_code == 200
    assert (await parley.client.get("/admin/users", headers=ADMIN)).status_code == 200


async def test_the_builtin_admin_is_not_counted_as_the_last_admin(parley: Parley) -> None:
    await builtin_admin(parley)
    alice = await create_user(parley, "alice", is_admin=True)
    response = await parley.client.post(f"/admin/users/{alice['id']}/suspend", headers=ADMIN)
    assert response.status_code == 409 and "last active admin" in response.json()["detail"]
    await create_user(parley, "bob", is_admin=True)
    response = await parley.client.post(f"/admin/users/{alice['id']}/suspend", headers=ADMIN)
    assert response.status_code == 200, response.text


async def test_a_builtin_admin_suspended_before_is_refused_on_admin_too(parley: Parley) -> None:
    await builtin_admin(parley)
    async with parley.store.engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE users SET status = 'suspended'")
    assert (await parley.client.get("/admin/users", headers=ADMIN)).status_code == 401
    # /v1 may remember the caller for CALLER_TTL_S: poll with a deadline
    deadline = time.monotonic() + CALLER_TTL_S + 5
    while (me := await parley.client.get("/v1/me", headers=ADMIN)).status_code != 401:
        assert time.monotonic() < deadline, me.text
        await asyncio.sleep(0.05)


async def test_failed_sign_ins_lock_the_address_out(make_parley: MakeParley) -> None:
    parley = make_parley(parley_auth_failure_limit=3)
    token = (await create_user(parley, "alice"))["token"]["token"]
    await fresh_window()
    wrong = {"Authorization": "Bearer pk-wrong-guess-of-the-admin-token"}
    assert (await parley.client.get("/admin/users", headers=wrong)).status_code == 401
    assert (await parley.client.get("/v1/me", headers=wrong)).status_code == 401
    assert (await parley.client.get("/admin/users", headers=wrong)).status_code == 401

    locked = await parley.client.get("/admin/users", headers=ADMIN)  # even the right token
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert "failed sign-ins" in locked.json()["detail"]
    on_v1 = await parley.client.get("/v1/me", headers=bearer(token))
    error = assert_openai_error(on_v1, 429, "too_many_failed_sign_ins")
    assert error["type"] == "rate_limit_error"
    assert ADMIN_TOKEN not in locked.text and token not in on_v1.text
    # Requests without a token are not sign-ins: still a plain 401.
    assert (await parley.client.get("/admin/users")).status_code == 401


async def test_without_failures_the_lock_never_engages(make_parley: MakeParley) -> None:
    parley = make_parley(parley_auth_failure_limit=2)
    await fresh_window()
    for _ in range(5):
        assert (await parley.client.get("/admin/users", headers=ADMIN)).status_code == 200
