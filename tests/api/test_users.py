"""Users and tokens of the Responses API: the admin API, self-service under /v1/me, secrets,
the per-token rate limit and usage per user, on both backends."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from parley.api.auth import CALLER_TTL_S, Caller, CallerCache
from parley.store.queries.usage import UsageAdd, add_user_usage
from parley.store.queries.users import AUTH_CHANGES
from tests.conftest import ADMIN_TOKEN, BACKENDS, MakeParley, Parley
from tests.factories import fresh_window

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET_KEY = SecretStr("test-secret-key-of-some-length")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_user(parley: Parley, name: str, *, is_admin: bool = False) -> dict[str, Any]:
    response = await parley.client.post(
        "/admin/users", json={"name": name, "is_admin": is_admin}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


async def test_a_new_users_token_works_and_is_stored_only_as_its_hash(parley: Parley) -> None:
    user = await create_user(parley, "alice")
    token = user["token"]["token"]
    assert token.startswith("pk-") and len(token) > 40
    assert user["name"] == "alice" and user["status"] == "active" and not user["is_admin"]

    me = await parley.client.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["id"] == user["id"] and me.json()["name"] == "alice"

    (row,) = await parley.rows("SELECT * FROM api_tokens")
    assert not any(token in str(value) for value in row)
    (prefix, token_hash, last_used) = (
        await parley.rows("SELECT prefix, token_hash, last_used_at FROM api_tokens")
    )[0]
    assert token.startswith(prefix) and len(prefix) == 12
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert last_used is not None

    listed = await parley.client.get(f"/admin/users/{user['id']}/tokens", headers=ADMIN)
    (shown,) = listed.json()
    assert shown["prefix"] == prefix and "token" not in shown and "token_hash" not in shown


async def test_a_token_is_marked_used_at_most_once_a_minute(parley: Parley) -> None:
    token = (await create_user(parley, "alice"))["token"]["token"]
    await parley.client.get("/v1/me", headers=bearer(token))
    (first,) = await parley.rows("SELECT last_used_at FROM api_tokens")
    await parley.client.get("/v1/me", headers=bearer(token))
    assert await parley.rows("SELECT last_used_at FROM api_tokens") == [first]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("pk-not-a-real-token-at-all"), {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
async def test_bad_tokens_are_refused_in_openais_shape(
    parley: Parley, headers: dict[str, str]
) -> None:
    error = assert_openai_error(
        await parley.client.get("/v1/me", headers=headers), 401, "invalid_api_key"
    )
    assert error["type"] == "authentication_error"
    assert "not-a-real-token" not in error["message"]


async def test_revoked_tokens_and_suspended_users_are_refused(parley: Parley) -> None:
    user = await create_user(parley, "alice")
    first = user["token"]["token"]
    second = (
        await parley.client.post(f"/admin/users/{user['id']}/tokens", headers=ADMIN, json={})
    ).json()
    assert (await parley.client.get("/v1/me", headers=bearer(second["token"]))).status_code == 200

    revoked = await parley.client.delete(
        f"/admin/users/{user['id']}/tokens/{second['id']}", headers=ADMIN
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await parley.client.get("/v1/me", headers=bearer(second["token"]))
    assert_openai_error(refused, 401, "invalid_api_key")
    assert (await parley.client.get("/v1/me", headers=bearer(first))).status_code == 200

    suspended = await parley.client.post(f"/admin/users/{user['id']}/suspend", headers=ADMIN)
    assert suspended.json()["status"] == "suspended"
    assert_openai_error(
        await parley.client.get("/v1/me", headers=bearer(first)), 401, "invalid_api_key"
    )
    await parley.client.post(f"/admin/users/{user['id']}/reactivate", headers=ADMIN)
    assert (await parley.client.get("/v1/me", headers=bearer(first))).status_code == 200


async def test_a_revocation_by_another_process_is_seen_within_the_cache_bound(
    parley: Parley,
) -> None:
    """A token revoked or a user suspended behind this process's back (the CLI, another API
    process) is refused at most `CALLER_TTL_S` later; in this process, at once (above)."""
    user = await create_user(parley, "alice")
    token = user["token"]["token"]
    assert (await parley.client.get("/v1/me", headers=bearer(token))).status_code == 200

    async with parley.store.engine.begin() as connection:
        await connection.execute(text("UPDATE users SET status = 'suspended'"))
    await asyncio.sleep(CALLER_TTL_S + 0.1)
    refused = await parley.client.get("/v1/me", headers=bearer(token))
    assert_openai_error(refused, 401, "invalid_api_key")

    async with parley.store.engine.begin() as connection:
        await connection.execute(text("UPDATE users SET status = 'active'"))
    assert (await parley.client.get("/v1/me", headers=bearer(token))).status_code == 200
    async with parley.store.engine.begin() as connection:
        await connection.execute(text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP"))
    await asyncio.sleep(CALLER_TTL_S + 0.1)
    refused = await parley.client.get("/v1/me", headers=bearer(token))
    assert_openai_error(refused, 401, "invalid_api_key")


def test_the_caller_cache_forgets_after_its_ttl_and_on_any_committed_change() -> None:
    now = [100.0]
    cache = CallerCache(ttl=1.0, clock=lambda: now[0])
    caller = Caller(user_id=1, name="alice", is_admin=False, token_id=7)
    cache.put("h", caller, since=cache.mark())
    assert cache.get("h") == caller and cache.get("other") is None
    now[0] += 0.99
    assert cache.get("h") == caller
    now[0] += 0.01
    assert cache.get("h") is None

    cache.put("h", caller, since=cache.mark())
    session = Session()
    AUTH_CHANGES.mark(session)
    session.dispatch.after_commit(session)  # what committing a revocation does
    assert cache.get("h") is None
    stale = cache.mark()
    AUTH_CHANGES.mark(session)
    session.dispatch.after_commit(session)
    cache.put("h", caller, since=stale)  # looked up across a change: not remembered
    assert cache.get("h") is None


def _commit_an_auth_change() -> None:
    session = Session()
    AUTH_CHANGES.mark(session)
    session.dispatch.after_commit(session)  # what committing a revocation does


async def test_requests_that_miss_the_caller_cache_together_share_one_lookup() -> None:
    cache = CallerCache(ttl=1.0)
    caller = Caller(user_id=1, name="alice", is_admin=False, token_id=7)
    started, release = asyncio.Event(), asyncio.Event()
    lookups: list[str] = []

    def finder(name: str) -> Callable[[], Awaitable[Caller | None]]:
        async def find() -> Caller | None:
            lookups.append(name)
            started.set()
            await release.wait()
            return caller

        return find

    first = asyncio.create_task(cache.lookup("h", finder("first")))
    await asyncio.wait_for(started.wait(), 5)
    later = [asyncio.create_task(cache.lookup("h", finder("later"))) for _ in range(9)]
    dropped = asyncio.create_task(cache.lookup("h", finder("dropped")))
    await asyncio.sleep(0)  # one step: each of them has joined the lookup and waits
    dropped.cancel()  # a request that goes away does not cancel the others' lookup
    release.set()
    assert await asyncio.gather(first, *later) == [caller] * 10
    assert lookups == ["first"]
    assert dropped.cancelled()
    assert await cache.lookup("h", finder("remembered")) == caller
    assert lookups == ["first"]


async def test_a_request_after_an_auth_change_does_not_join_a_lookup_from_before_it() -> None:
    cache = CallerCache(ttl=1.0)
    release = asyncio.Event()
    lookups: list[str] = []

    def finder(name: str, found: Caller | None) -> Callable[[], Awaitable[Caller | None]]:
        async def find() -> Caller | None:
            lookups.append(name)
            await release.wait()
            return found

        return find

    alice = Caller(user_id=1, name="alice", is_admin=False, token_id=7)
    before = asyncio.create_task(cache.lookup("h", finder("before", alice)))
    await asyncio.sleep(0)
    _commit_an_auth_change()  # the token is revoked while that lookup is under way
    after = asyncio.create_task(cache.lookup("h", finder("after", None)))
    await asyncio.sleep(0)
    release.set()
    assert await before == alice
    assert await after is None
    assert lookups == ["before", "after"]
    assert cache.get("h") is None  # neither is remembered: the first began before the change


async def test_a_failed_shared_lookup_fails_each_request_and_is_not_remembered() -> None:
    cache = CallerCache(ttl=1.0)
    release = asyncio.Event()

    async def broken() -> Caller | None:
        await release.wait()
        raise OSError("database unreachable")

    waiting = [asyncio.create_task(cache.lookup("h", broken)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [OSError] * 3
    caller = Caller(user_id=1, name="alice", is_admin=False, token_id=7)

    async def works() -> Caller | None:
        return caller

    assert await cache.lookup("h", works) == caller


async def test_the_last_active_admin_cannot_be_removed(parley: Parley) -> None:
    alice = await create_user(parley, "alice", is_admin=True)
    path = f"/admin/users/{alice['id']}"
    for attempt in (
        parley.client.delete(path, headers=ADMIN),
        parley.client.post(f"{path}/suspend", headers=ADMIN),
        parley.client.patch(path, json={"is_admin": False}, headers=ADMIN),
    ):
        response = await attempt
        assert response.status_code == 409, response.text
        assert "last active admin" in response.json()["detail"]
    assert await parley.rows("SELECT name, is_admin, status FROM users") == [
        ("alice", True, "active")
    ]

    await create_user(parley, "bob", is_admin=True)
    assert (await parley.client.delete(path, headers=ADMIN)).status_code == 204
    assert await parley.rows("SELECT name FROM users") == [("bob",)]
    assert await parley.rows("SELECT count(*) FROM api_tokens") == [(1,)]


async def test_admin_api_answers_conflicts_unknowns_and_bad_bodies(parley: Parley) -> None:
    await create_user(parley, "alice")
    duplicate = await parley.client.post("/admin/users", json={"name": "alice"}, headers=ADMIN)
    assert duplicate.status_code == 409
    for body in ({"name": ""}, {"name": "_admin"}, {"name": "a b"}, {}, {"name": 3}):
        response = await parley.client.post("/admin/users", json=body, headers=ADMIN)
        assert response.status_code == 422, body
    assert (await parley.client.get("/admin/users/999", headers=ADMIN)).status_code == 404
    assert (await parley.client.delete("/admin/users/999", headers=ADMIN)).status_code == 404
    gone = await parley.client.delete("/admin/users/1/tokens/999", headers=ADMIN)
    assert gone.status_code == 404
    listed = await parley.client.get("/admin/users", headers=ADMIN)
    assert [user["name"] for user in listed.json()] == ["alice"]


async def test_an_admin_users_own_token_opens_the_admin_api(parley: Parley) -> None:
    admin_token = (await create_user(parley, "root", is_admin=True))["token"]["token"]
    plain_token = (await create_user(parley, "bob"))["token"]["token"]
    listed = await parley.client.get("/admin/users", headers=bearer(admin_token))
    assert listed.status_code == 200 and len(listed.json()) == 2
    made = await parley.client.post(
        "/admin/users", json={"name": "carol"}, headers=bearer(admin_token)
    )
    assert made.status_code == 201
    assert (await parley.client.get("/admin/users", headers=bearer(plain_token))).status_code == 403
    refused = await parley.client.get("/admin/users", headers=bearer("pk-nope"))
    assert refused.status_code == 401


async def test_self_service_tokens(parley: Parley) -> None:
    alice = (await create_user(parley, "alice"))["token"]["token"]
    bob = await create_user(parley, "bob")
    made = await parley.client.post("/v1/me/tokens", json={"name": "laptop"}, headers=bearer(alice))
    assert made.status_code == 201
    laptop = made.json()
    assert laptop["name"] == "laptop" and laptop["token"].startswith(laptop["prefix"])
    listed = (await parley.client.get("/v1/me/tokens", headers=bearer(laptop["token"]))).json()
    assert listed["object"] == "list"
    assert [t["name"] for t in listed["data"]] == ["default", "laptop"]
    assert all("token" not in t for t in listed["data"])

    others = await parley.client.delete(
        f"/v1/me/tokens/{bob['token']['id']}", headers=bearer(alice)
    )
    assert_openai_error(others, 404, "not_found")
    own = await parley.client.delete(f"/v1/me/tokens/{laptop['id']}", headers=bearer(alice))
    assert own.status_code == 200
    assert_openai_error(
        await parley.client.get("/v1/me", headers=bearer(laptop["token"])), 401, "invalid_api_key"
    )
    json_headers = {**bearer(alice), "Content-Type": "application/json"}
    bad = await parley.client.post("/v1/me/tokens", content=b"{nope", headers=json_headers)
    assert_openai_error(bad, 400, "invalid_json")


async def test_the_bootstrap_admin_token_acts_as_a_built_in_admin_user(parley: Parley) -> None:
    me = await parley.client.get("/v1/me", headers=ADMIN)
    assert me.status_code == 200
    assert me.json()["name"] == "_admin" and me.json()["is_admin"] is True
    again = await parley.client.get("/v1/me", headers=ADMIN)
    assert again.json()["id"] == me.json()["id"]


# --- secrets ------------------------------------------------------------------------------


async def test_secrets_are_write_only_and_encrypted_at_rest(make_parley: MakeParley) -> None:
    parley = make_parley(parley_secret_key=SECRET_KEY)
    token = (await create_user(parley, "alice"))["token"]["token"]
    plaintext = "crm-token-0123456789"

    put = await parley.client.put(
        "/v1/me/secrets/crm_token", json={"value": plaintext}, headers=bearer(token)
    )
    assert put.status_code == 200
    assert plaintext not in put.text and put.json()["name"] == "crm_token"
    replaced = await parley.client.put(
        "/v1/me/secrets/crm_token", json={"value": plaintext + "-2"}, headers=bearer(token)
    )
    assert replaced.status_code == 200

    listed = await parley.client.get("/v1/me/secrets", headers=bearer(token))
    assert [s["name"] for s in listed.json()["data"]] == ["crm_token"]
    assert plaintext not in listed.text

    (row,) = await parley.rows("SELECT * FROM user_secrets")
    assert not any(plaintext in str(value) for value in row)

    deleted = await parley.client.delete("/v1/me/secrets/crm_token", headers=bearer(token))
    assert deleted.json() == {"name": "crm_token", "deleted": True}
    assert await parley.rows("SELECT count(*) FROM user_secrets") == [(0,)]
    again = await parley.client.delete("/v1/me/secrets/crm_token", headers=bearer(token))
    assert_openai_error(again, 404, "not_found")


async def test_bad_secret_requests_are_clear_400s(parley: Parley) -> None:
    """`parley` has no PARLEY_SECRET_KEY: storing a secret is refused, not a 500."""
    token = (await create_user(parley, "alice"))["token"]["token"]
    no_key = await parley.client.put(
        "/v1/me/secrets/crm", json={"value": "v"}, headers=bearer(token)
    )
    error = assert_openai_error(no_key, 400, "secrets_disabled")
    assert "PARLEY_SECRET_KEY" in error["message"]
    empty = await parley.client.put("/v1/me/secrets/crm", json={"value": ""}, headers=bearer(token))
    assert_openai_error(empty, 400, "invalid_value")
    bad_name = await parley.client.put(
        "/v1/me/secrets/a%20b", json={"value": "v"}, headers=bearer(token)
    )
    assert_openai_error(bad_name, 400, "invalid_value")
    assert await parley.rows("SELECT count(*) FROM user_secrets") == [(0,)]


# --- the per-token rate limit ---------------------------------------------------------------


async def test_over_the_per_token_limit_is_a_429_with_retry_after(
    make_parley: MakeParley,
) -> None:
    parley = make_parley(parley_api_rate_limit=2)
    alice = (await create_user(parley, "alice"))["token"]["token"]
    bob = (await create_user(parley, "bob"))["token"]["token"]
    await fresh_window()
    for _ in range(2):
        assert (await parley.client.get("/v1/me", headers=bearer(alice))).status_code == 200
    limited = await parley.client.get("/v1/me", headers=bearer(alice))
    error = assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert (await parley.client.get("/v1/me", headers=bearer(bob))).status_code == 200


@pytest.mark.parametrize(
    "backend", [name for name in BACKENDS if name == "postgres"], indirect=True
)
async def test_the_limit_is_shared_by_processes_on_one_redis(make_parley: MakeParley) -> None:
    first = make_parley(parley_api_rate_limit=3)
    second = make_parley(parley_api_rate_limit=3)
    token = (await create_user(first, "alice"))["token"]["token"]
    await fresh_window()
    for app in (first, second, first):
        assert (await app.client.get("/v1/me", headers=bearer(token))).status_code == 200
    limited = await second.client.get("/v1/me", headers=bearer(token))
    assert_openai_error(limited, 429, "rate_limit_exceeded")


# --- usage per user -----------------------------------------------------------------------


def usage(model: str, tokens: int, cost: str) -> UsageAdd:
    return UsageAdd(model, tokens, 1, tokens * 2, 0, Decimal(cost))


async def test_usage_is_summed_per_user_model_and_day(parley: Parley) -> None:
    alice = await create_user(parley, "alice")
    bob = await create_user(parley, "bob")
    sessions = async_sessionmaker(parley.store.engine)
    async with sessions() as session:
        await add_user_usage(session, user_id=alice["id"], usage=usage("gpt-5-mini", 10, "0.01"))
        await add_user_usage(session, user_id=alice["id"], usage=usage("gpt-5-mini", 5, "0.02"))
        await add_user_usage(session, user_id=alice["id"], usage=usage("gpt-5", 1, "0.5"))
        await add_user_usage(session, user_id=bob["id"], usage=usage("gpt-5-mini", 7, "0"))
        await session.commit()

    rows = (await parley.client.get(f"/admin/users/{alice['id']}/usage", headers=ADMIN)).json()
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"gpt-5", "gpt-5-mini"}
    mini = by_model["gpt-5-mini"]
    assert (mini["requests"], mini["input_tokens"], mini["output_tokens"]) == (2, 15, 30)
    assert mini["cached_tokens"] == 2 and Decimal(mini["cost_usd"]) == Decimal("0.03")

    mine = await parley.client.get("/v1/me/usage", headers=bearer(bob["token"]["token"]))
    assert [(r["user_id"], r["requests"]) for r in mine.json()["data"]] == [(bob["id"], 1)]

    day = mini["day"]
    everyone = await parley.client.get(
        "/admin/usage/users", params={"since": day, "until": day}, headers=ADMIN
    )
    assert sorted((r["user_id"], r["model"]) for r in everyone.json()) == [
        (alice["id"], "gpt-5"),
        (alice["id"], "gpt-5-mini"),
        (bob["id"], "gpt-5-mini"),
    ]
    later = await parley.client.get(
        "/admin/usage/users", params={"since": "2999-01-01"}, headers=ADMIN
    )
    assert later.json() == []
