"""An HTTP tool's `{secret:NAME}` headers are filled from the calling user's secrets, decrypted
at call time; without a user, a key or the secret, the tool answers an error and sends nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import ToolCall
from parley.agent.tools import ToolContext, ToolRegistry, load_tools
from parley.store.crypto import SecretBox
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.queries.users import create_user, set_secret
from parley.testing import ServerThread

BOX = SecretBox("test-secret-key")


class Recorder:
    """A loopback API that records the Authorization header of each call."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self.app = FastAPI()

        @self.app.post("/crm")
        async def crm(request: Request) -> dict[str, str]:
            self.seen.append(request.headers.get("authorization"))
            return {"status": "shipped"}


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    server = ServerThread(recorder.app)
    server.start()
    yield recorder, server.url
    server.stop()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def crm_tools(
    url: str,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    box: SecretBox | None = BOX,
) -> ToolRegistry:
    spec = {
        "name": "crm",
        "http": {"url": f"{url}/crm", "headers": {"Authorization": "Bearer {secret:crm_token}"}},
    }
    return load_tools(json.dumps([spec]), sessions=sessions, http=http, builtins="", secrets=box)


CALL = ToolCall(call_id="call_1", name="crm", arguments='{"order": "A-17"}')


async def test_the_callers_secret_fills_the_header(
    recorder: tuple[Recorder, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    sim, url = recorder
    sim.seen.clear()
    async with sessions() as session:
        alice, _ = await create_user(session, name="alice")
        bob, _ = await create_user(session, name="bob")
        await set_secret(session, user_id=alice.id, name="crm_token", value="s3cret", box=BOX)
        await session.commit()
    async with httpx.AsyncClient(timeout=5) as http:
        tools = crm_tools(url, sessions, http)
        answer = await tools.call(CALL, ToolContext(conversation_id=1, user_id=alice.id))
        assert json.loads(answer) == {"status": "shipped"}
        assert sim.seen == ["Bearer s3cret"]

        missing = await tools.call(CALL, ToolContext(conversation_id=1, user_id=bob.id))
        no_user = await tools.call(CALL, ToolContext(conversation_id=1))
        no_key = await crm_tools(url, sessions, http, box=None).call(
            CALL, ToolContext(conversation_id=1, user_id=alice.id)
        )
        wrong_key = await crm_tools(url, sessions, http, box=SecretBox("another")).call(
            CALL, ToolContext(conversation_id=1, user_id=alice.id)
        )
    assert "crm_token" in missing and missing.startswith("error:")
    assert no_user.startswith("error:") and "no user" in no_user
    assert no_key.startswith("error:") and "PARLEY_SECRET_KEY" in no_key
    assert wrong_key.startswith("error:")
    assert not any("s3cret" in text for text in (missing, no_user, no_key, wrong_key))
    assert sim.seen == ["Bearer s3cret"]  # no call went out without its secret
