"""`GET /v1/models`: the agent profiles as the official SDK lists models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI

from tests.api.test_responses import new_token, sdk
from tests.conftest import ADMIN_TOKEN, Parley, Store


@pytest.fixture
async def client(parley: Parley, store: Store) -> AsyncIterator[AsyncOpenAI]:
    client = sdk(parley, await new_token(store, "alice"))
    yield client
    await client.close()


async def test_profiles_are_listed_and_answer_as_models(
    client: AsyncOpenAI, parley: Parley
) -> None:
    assert [m.id for m in (await client.models.list()).data] == ["default"]

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    prompt = {"name": "sales", "instructions": "You sell bikes."}
    assert (await parley.client.post("/admin/prompts", json=prompt, headers=admin)).is_success
    bound = await parley.client.put(
        "/admin/profiles/sales", json={"prompt": "sales"}, headers=admin
    )
    assert bound.is_success, bound.text

    listed = (await client.models.list()).data
    assert [m.id for m in listed] == ["default", "sales"]
    assert all(m.object == "model" and m.owned_by == "parley" for m in listed)
    sales = await client.models.retrieve("sales")
    assert sales.id == "sales" and sales.created > 0
    # What is listed is what `/v1/responses` accepts as `model`.
    answer = await client.responses.create(model=listed[1].id, input="hi")
    assert answer.model == "sales"


async def test_unknown_model_is_an_openai_404(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-unknown")
    assert caught.value.code == "model_not_found"


async def test_models_need_a_token(parley: Parley) -> None:
    answer = await parley.client.get("/v1/models")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
