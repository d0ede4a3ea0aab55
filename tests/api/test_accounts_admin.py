"""`/admin/accounts`: create, list, show, change and remove accounts; secrets go in and never
come out; bad input, duplicates and unknown ids answer 4xx JSON."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from parley.store.crypto import SecretBox
from tests.api.test_admin import ADMIN
from tests.conftest import MakeParley, Parley

SECRET_KEY = "admin-test-secret-key"
TOKEN = "EAAG-a-long-lived-system-user-token"
APP_SECRET = "0123456789abcdef-app-secret"


@pytest.fixture
def parley(make_parley: MakeParley) -> Parley:
    return make_parley(parley_secret_key=SecretStr(SECRET_KEY))


async def call(parley: Parley, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await parley.client.request(method, path, json=body, headers=ADMIN)
    assert response.headers["content-type"].startswith("application/json"), response.text
    for secret in (TOKEN, APP_SECRET):
        assert secret not in response.text
    return response.status_code, response.json()


async def test_crud_round_trip_never_returns_a_secret(parley: Parley) -> None:
    status, created = await call(
        parley,
        "POST",
        "/admin/accounts",
        {
            "channel": "whatsapp",
            "external_id": "301000000000001",
            "name": "Lisbon shop",
            "access_token": TOKEN,
            "app_secret": APP_SECRET,
            "profile": "sales",
            "send_rate": 40,
        },
    )
    assert status == 201
    fingerprint = SecretBox(SECRET_KEY).fingerprint(TOKEN)
    assert created["access_token"] == {"set": True, "fingerprint": fingerprint, "readable": True}
    assert created["verify_token"] == {"set": False, "fingerprint": None, "readable": True}
    assert (created["status"], created["profile"], created["send_rate"]) == ("active", "sales", 40)
    account_id = created["id"]

    status, listed = await call(parley, "GET", "/admin/accounts")
    assert status == 200 and [a["id"] for a in listed] == [account_id]
    status, shown = await call(parley, "GET", f"/admin/accounts/{account_id}")
    assert status == 200 and shown == created

    status, changed = await call(
        parley,
        "PATCH",
        f"/admin/accounts/{account_id}",
        {"name": "Porto shop", "access_token": None, "enabled": False},
    )
    assert status == 200
    assert changed["name"] == "Porto shop" and changed["status"] == "disabled"
    assert changed["access_token"]["set"] is False
    assert changed["app_secret"] == created["app_secret"]  # untouched
    assert changed["profile"] == "sales"

    status, removed = await call(parley, "DELETE", f"/admin/accounts/{account_id}")
    assert status == 200 and removed["status"] == "removed" and removed["removed_at"]
    assert removed["app_secret"]["set"] is False  # credentials erased
    assert (await call(parley, "GET", "/admin/accounts"))[1] == []
    status, with_removed = await call(parley, "GET", "/admin/accounts?include_removed=true")
    assert [a["id"] for a in with_removed] == [account_id]
    # Still there for audit, and added again under the same id.
    assert (await call(parley, "GET", f"/admin/accounts/{account_id}"))[0] == 200
    status, again = await call(
        parley, "POST", "/admin/accounts", {"channel": "whatsapp", "external_id": "301000000000001"}
    )
    assert status == 201 and again["id"] == account_id and again["status"] == "active"
    assert again["name"] is None  # an add says everything the account is


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/admin/accounts", {"channel": "telegram", "external_id": "1"}, 400,
         "unknown channel"),
        ("POST", "/admin/accounts", {"channel": "whatsapp", "external_id": "a b"}, 400,
         "account id"),
        ("POST", "/admin/accounts", {"channel": "whatsapp", "external_id": "1", "send_rate": -1},
         400, "send_rate"),
        ("POST", "/admin/accounts", {"channel": "whatsapp"}, 422, "external_id"),
        ("POST", "/admin/accounts", {"channel": "whatsapp", "external_id": "1", "colour": "red"},
         422, "colour"),
        ("GET", "/admin/accounts/999", None, 404, "no account"),
        ("PATCH", "/admin/accounts/999", {"name": "x"}, 404, "no account"),
        ("DELETE", "/admin/accounts/999", None, 404, "no account"),
    ],
)  # fmt: skip
async def test_bad_requests_are_4xx_json(
    parley: Parley, method: str, path: str, body: Any, status: int, says: str
) -> None:
    got, answer = await call(parley, method, path, body)
    assert got == status
    assert says in str(answer["detail"])


async def test_duplicates_conflict_and_removed_accounts_cannot_be_changed(parley: Parley) -> None:
    body = {"channel": "whatsapp", "external_id": "301000000000002"}
    status, created = await call(parley, "POST", "/admin/accounts", body)
    assert status == 201
    status, answer = await call(parley, "POST", "/admin/accounts", body)
    assert status == 409 and "already exists" in answer["detail"]
    path = f"/admin/accounts/{created['id']}"
    assert (await call(parley, "PATCH", path, {"enabled": None}))[0] == 400
    assert (await call(parley, "DELETE", path))[0] == 200
    assert (await call(parley, "DELETE", path))[0] == 404
    status, answer = await call(parley, "PATCH", path, {"name": "late"})
    assert status == 404 and "removed" in answer["detail"]


async def test_invalid_secrets_are_not_echoed(parley: Parley) -> None:
    # A token of the wrong type fails validation: the answer names the field, not the value.
    status, answer = await call(
        parley,
        "POST",
        "/admin/accounts",
        {"channel": "whatsapp", "external_id": "1", "access_token": [TOKEN]},
    )
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", "access_token"]
    assert "input" not in answer["detail"][0]


async def test_a_secret_needs_parley_secret_key(make_parley: MakeParley) -> None:
    parley = make_parley()  # no PARLEY_SECRET_KEY
    body = {"channel": "whatsapp", "external_id": "1", "access_token": TOKEN}
    status, answer = await call(parley, "POST", "/admin/accounts", body)
    assert status == 400 and "PARLEY_SECRET_KEY" in answer["detail"]
    assert await parley.rows("SELECT count(*) FROM accounts") == [(0,)]
    # Without a secret, an account needs no key.
    status, _ = await call(parley, "POST", "/admin/accounts", {**body, "access_token": None})
    assert status == 201


async def test_accounts_need_the_admin_token(parley: Parley) -> None:
    assert (await parley.client.get("/admin/accounts")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    response = await parley.client.post(
        "/admin/accounts", json={"channel": "whatsapp", "external_id": "1"}, headers=wrong
    )
    assert response.status_code == 401
    assert await parley.rows("SELECT count(*) FROM accounts") == [(0,)]
