"""Ids and names in paths and queries that no row can have: a 4xx, never a 500 or 503.

Past a BIGINT, SQLite overflows and PostgreSQL refuses the parameter; a NUL is a character
PostgreSQL cannot store at all. The edge answers them as what they are: not an id."""

from __future__ import annotations

import pytest

from tests.api.test_responses import new_token
from tests.conftest import ADMIN_TOKEN, Parley, Store

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HUGE = "9223372036854775808"  # one past the largest BIGINT

ADMIN_PATHS = [
    ("GET", f"/admin/accounts/{HUGE}"),
    ("PATCH", f"/admin/accounts/{HUGE}"),
    ("DELETE", f"/admin/accounts/{HUGE}"),
    ("GET", f"/admin/users/{HUGE}"),
    ("POST", f"/admin/users/{HUGE}/suspend"),
    ("DELETE", f"/admin/users/{HUGE}"),
    ("GET", f"/admin/users/{HUGE}/tokens"),
    ("DELETE", f"/admin/users/1/tokens/{HUGE}"),
    ("GET", f"/admin/users/{HUGE}/usage"),
    ("POST", f"/admin/messages/{HUGE}/retry"),
    ("GET", f"/admin/conversations/{HUGE}/usage"),
    ("GET", f"/admin/usage?account_id={HUGE}"),
    ("GET", f"/admin/usage/users?user_id={HUGE}"),
    ("PUT", f"/admin/accounts/{HUGE}/prompt"),
    ("POST", f"/admin/accounts/{HUGE}/prompt/rollback"),
    ("GET", f"/admin/prompts/x/versions/{HUGE}"),
    ("GET", "/admin/users/-1"),
    ("GET", "/admin/prompts/%00"),
    ("GET", "/admin/prompts/a%00b/versions/1"),
    ("PUT", "/admin/profiles/%00"),
    ("POST", "/admin/profiles/%00/rollback"),
    ("DELETE", "/admin/profiles/%00/ab"),
    ("GET", "/admin/messages/failed?limit=1&x=%00"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_admin_refuses_ids_no_row_can_have(parley: Parley, method: str, path: str) -> None:
    body = {"prompt": "x"} if method in ("PUT", "PATCH") else None
    answer = await parley.client.request(method, path, headers=ADMIN, json=body)
    assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"/v1/me/tokens/{HUGE}"),
        ("DELETE", "/v1/me/tokens/0"),
        ("PUT", "/v1/me/secrets/%00"),
        ("DELETE", "/v1/me/secrets/a%00"),
        ("GET", "/v1/responses/resp_1/input_items?after=a%00"),
    ],
)
async def test_v1_refuses_ids_no_row_can_have(
    parley: Parley, store: Store, method: str, path: str
) -> None:
    token = await new_token(store, "alice")
    body = {"value": "x"} if method == "PUT" else None
    answer = await parley.client.request(
        method, path, headers={"Authorization": f"Bearer {token}"}, json=body
    )
    assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)
    assert answer.json()["error"]["type"] == "invalid_request_error"
