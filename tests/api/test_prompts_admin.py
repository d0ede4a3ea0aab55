"""The prompt registry's admin API: what it creates and binds, and clear 4xx for bad input."""

from __future__ import annotations

from tests.api.test_admin import ADMIN
from tests.conftest import Parley

SUPPORT = {
    "name": "support",
    "description": "front line",
    "instructions": "Help {{customer_name}}.",
    "model": "gpt-5-nano",
    "settings": {"temperature": 0.2},
    "variables": {"customer_name": "there"},
}


async def test_prompts_versions_and_bindings(parley: Parley) -> None:
    client = parley.client
    created = await client.post("/admin/prompts", json=SUPPORT, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert (created.json()["prompt"], created.json()["version"]) == ("support", 1)
    added = await client.post(
        "/admin/prompts/support/versions",
        json={"instructions": "Terse.", "note": "shorter"},
        headers=ADMIN,
    )
    assert added.status_code == 201 and added.json()["version"] == 2

    (listed,) = (await client.get("/admin/prompts", headers=ADMIN)).json()
    assert (listed["name"], listed["versions"], listed["latest"]) == ("support", 2, 2)
    shown = (await client.get("/admin/prompts/support", headers=ADMIN)).json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    one = (await client.get("/admin/prompts/support/versions/1", headers=ADMIN)).json()
    assert one["settings"] == {"temperature": 0.2} and one["variables"]["customer_name"] == "there"

    bound = await client.put("/admin/profiles/default", json={"prompt": "support"}, headers=ADMIN)
    assert bound.status_code == 200 and bound.json()["version"] == 2  # latest by default
    ab = await client.put(
        "/admin/profiles/default/ab",
        json={"prompt": "support", "version": 1, "percent": 20},
        headers=ADMIN,
    )
    assert ab.json()["candidate_version"] == 1 and ab.json()["candidate_percent"] == 20
    (profile,) = (await client.get("/admin/profiles", headers=ADMIN)).json()
    assert (profile["profile"], profile["version"], profile["candidate_version"]) == (
        "default",
        2,
        1,
    )
    stopped = await client.delete("/admin/profiles/default/ab", headers=ADMIN)
    assert stopped.json()["candidate_version"] is None
    back = await client.post("/admin/profiles/default/rollback", json={"version": 1}, headers=ADMIN)
    assert back.status_code == 200 and back.json()["version"] == 1
    assert (await client.get("/admin/prompts/report", headers=ADMIN)).json() == []


async def test_bad_input_gets_a_clear_4xx(parley: Parley) -> None:
    client = parley.client

    async def status(method: str, path: str, body: object = None) -> tuple[int, str]:
        response = await client.request(method, path, json=body, headers=ADMIN)
        return response.status_code, response.text

    assert (await status("POST", "/admin/prompts", SUPPORT))[0] == 201
    code, text = await status("POST", "/admin/prompts", SUPPORT)
    assert code == 409 and "already exists" in text
    assert (await status("GET", "/admin/prompts/nope"))[0] == 404
    assert (await status("GET", "/admin/prompts/support/versions/9"))[0] == 404
    assert (await status("POST", "/admin/prompts/nope/versions", {"instructions": "x"}))[0] == 404
    code, text = await status(
        "POST", "/admin/prompts/support/versions", {"instructions": "x", "settings": {"bad": 1}}
    )
    assert code == 400 and "unknown model settings" in text
    assert (await status("POST", "/admin/prompts", {**SUPPORT, "name": "a b"}))[0] == 400
    assert (await status("POST", "/admin/prompts", {"name": "x"}))[0] == 422
    code, text = await status("PUT", "/admin/profiles/default", {"prompt": "nope"})
    assert code == 404 and "nope" in text
    assert (await status("PUT", "/admin/accounts/999/prompt", {"prompt": "support"}))[0] == 404
    code, text = await status("POST", "/admin/profiles/sales/rollback")
    assert code == 404 and "activate one first" in text
    ab = {"prompt": "support", "version": 1, "percent": 150}
    assert (await status("PUT", "/admin/profiles/default/ab", ab))[0] == 422
    code, text = await status("PUT", "/admin/profiles/default/ab", {**ab, "percent": 10})
    assert code == 404 and "activate one first" in text
    assert (await status("PUT", "/admin/profiles/default", {"prompt": "support"}))[0] == 200
    code, text = await status("PUT", "/admin/profiles/default/ab", {**ab, "percent": 10})
    assert code == 400 and "active version already" in text
    code, text = await status("POST", "/admin/profiles/default/rollback")
    assert code == 404 and "no earlier version" in text
    assert (await client.get("/admin/prompts")).status_code == 401
