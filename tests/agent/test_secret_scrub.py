"""A user's secret values never come back out of an HTTP tool: whatever the tool answers (its
output or its error) has them replaced by `[secret]` before the model, the store or the API
sees it, and a stored value with a control character is refused before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import ToolCall
from parley.agent.tools import SCRUBBED, ToolContext, load_tools, scrub
from parley.store.models import UserSecret
from parley.store.queries.users import create_user, set_secret
from parley.testing import ServerThread
from tests.agent.test_secret_headers import BOX, sessions

__all__ = ["sessions"]  # the fixture, shared

SECRET = "s3cret-value-of-alice"


class Echo:
    """A loopback API that repeats the Authorization header it got, in its body or in a 500."""

    def __init__(self) -> None:
        self.calls = 0
        self.app = FastAPI()

        @self.app.post("/echo")
        async def echo(request: Request) -> dict[str, str | None]:
            self.calls += 1
            return {"you_sent": request.headers.get("authorization")}

        @self.app.post("/fail")
        async def fail(request: Request) -> PlainTextResponse:
            self.calls += 1
            return PlainTextResponse(f"bad {request.headers.get('authorization')}", 500)


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Echo, str]]:
    echo = Echo()
    server = ServerThread(echo.app)
    server.start()
    yield echo, server.url
    server.stop()


def tool(url: str, sessions: async_sessionmaker[AsyncSession], http: httpx.AsyncClient) -> Any:
    spec = {
        "name": "crm",
        "http": {"url": url, "headers": {"Authorization": "Bearer {secret:crm_token}"}},
    }
    return load_tools(json.dumps([spec]), sessions=sessions, http=http, builtins="", secrets=BOX)


CALL = ToolCall(call_id="call_1", name="crm", arguments="{}")


async def test_a_tools_output_never_repeats_the_secret(
    echo: tuple[Echo, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, url = echo
    async with sessions() as session:
        alice, _ = await create_user(session, name="alice")
        await set_secret(session, user_id=alice.id, name="crm_token", value=SECRET, box=BOX)
        await session.commit()
    async with httpx.AsyncClient(timeout=5) as http:
        context = ToolContext(conversation_id=1, user_id=alice.id)
        answer = await tool(f"{url}/echo", sessions, http).call(CALL, context)
        assert json.loads(answer) == {"you_sent": f"Bearer {SCRUBBED}"}
        failed = await tool(f"{url}/fail", sessions, http).call(CALL, context)
        assert failed.startswith("error: HTTPStatusError") and SECRET not in failed


async def test_a_stored_secret_with_a_newline_is_never_sent_nor_quoted(
    echo: tuple[Echo, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    server, url = echo
    async with sessions() as session:
        alice, _ = await create_user(session, name="alice")
        # As stored before values were checked: set_secret refuses it now.
        value = "zq9-value\r\nX-Injected: yes"
        session.add(UserSecret(user_id=alice.id, name="crm_token", ciphertext=BOX.encrypt(value)))
        await session.commit()
    calls = server.calls
    async with httpx.AsyncClient(timeout=5) as http:
        context = ToolContext(conversation_id=1, user_id=alice.id)
        answer = await tool(f"{url}/echo", sessions, http).call(CALL, context)
    assert "crm_token" in answer and "control character" in answer
    assert "zq9" not in answer and "Injected" not in answer
    assert server.calls == calls


def test_scrub_hides_quoted_forms_and_leaves_short_values() -> None:
    value = 'a"b\\c\nd'
    text = f"raw {value} repr {value!r} json {json.dumps(value)} ok"
    assert scrub(text, [value, "ab"]) == "raw [secret] repr '[secret]' json \"[secret]\" ok"
