"""Odd but possible `/v1` requests answered with OpenAI's 4xx, never a 500."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from tests.api.test_responses import new_token, sdk
from tests.conftest import ADMIN_TOKEN, Parley, Store


@pytest.fixture
async def token(store: Store) -> str:
    return await new_token(store, "alice")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.mark.parametrize("depth", [2_000, 100_000])
async def test_deeply_nested_body_is_a_400(parley: Parley, token: str, depth: int) -> None:
    body = '{"model": "default", "input": "hi", "metadata": ' + "[" * depth + "]" * depth + "}"
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"


async def test_context_nested_as_deep_as_json_allows_is_answered(
    parley: Parley, token: str
) -> None:
    nested = '{"a": ' * 900 + "1" + "}" * 900
    body = '{"model": "default", "input": "hi", "x_context": ' + nested + "}"
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["status"] == "completed"

    deeper = '{"a": ' * 3_000 + "1" + "}" * 3_000
    body = '{"model": "default", "input": "hi", "x_context": ' + deeper + "}"
    answer = await parley.client.post("/v1/responses", content=body, headers=bearer(token))
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["code"] == "invalid_json"


async def test_input_items_with_before_ahead_of_after_is_empty(parley: Parley, token: str) -> None:
    client: AsyncOpenAI = sdk(parley, token)
    try:
        said = [{"role": "user", "content": f"message {n}"} for n in range(4)]
        created = await client.responses.create(model="default", input=said)  # type: ignore[arg-type]
        items = (await client.responses.input_items.list(created.id, order="asc")).data
        assert len(items) == 4
        page = await parley.client.get(
            f"/v1/responses/{created.id}/input_items",
            params={"order": "asc", "after": items[2].id, "before": items[0].id},
            headers=bearer(token),
        )
        assert page.status_code == 200, page.text
        assert page.json()["data"] == []
        between = await client.responses.input_items.list(
            created.id, order="asc", after=items[0].id, extra_query={"before": items[3].id}
        )
        assert [i.id for i in between.data] == [items[1].id, items[2].id]
    finally:
        await client.close()


async def test_a_path_id_the_store_cannot_hold_is_not_found(parley: Parley, token: str) -> None:
    for odd in ("r" * 5_000, "resp_%F0%9F%98%80", "resp_%20x"):
        for method, path in (
            ("GET", f"/v1/responses/{odd}"),
            ("DELETE", f"/v1/responses/{odd}"),
            ("POST", f"/v1/responses/{odd}/cancel"),
            ("GET", f"/v1/responses/{odd}/input_items"),
        ):
            answer = await parley.client.request(method, path, headers=bearer(token))
            assert answer.status_code == 404, (method, path[:40], answer.text)
            assert answer.json()["error"]["code"] == "not_found"
    chained = {"model": "default", "input": "hi", "previous_response_id": "resp_\x00"}
    answer = await parley.client.post("/v1/responses", json=chained, headers=bearer(token))
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["param"] == "previous_response_id"


async def test_an_empty_idempotency_key_is_no_key(parley: Parley, token: str) -> None:
    """Two different requests sent with an empty key are two responses, not a conflict; and the
    profile they name keeps answering (the second one's rolled-back insert once left the
    profile's remembered prompt unreadable: every later request naming it was a 500)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    prompt = {"name": "sales", "instructions": "You sell bikes."}
    assert (await parley.client.post("/admin/prompts", json=prompt, headers=admin)).is_success
    bound = await parley.client.put(
        "/admin/profiles/sales", json={"prompt": "sales"}, headers=admin
    )
    assert bound.is_success, bound.text

    ids = []
    for text, key in (("first", ""), ("second", ""), ("third", None)):
        headers = bearer(token) | ({"Idempotency-Key": key} if key is not None else {})
        body = {"model": "sales", "input": text}
        answer = await parley.client.post("/v1/responses", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    assert len(set(ids)) == 3
    assert await parley.rows("SELECT count(*) FROM responses WHERE idempotency_key = ''") == [(0,)]
