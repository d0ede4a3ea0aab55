"""send_text and mark_read against a real Graph-shaped HTTP server on loopback.

The server's answer is picked by the phone number id in the path, so each test shows the
request it makes and the error it gets back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from parley.channels import whatsapp
from parley.channels.base import SendResult
from parley.errors import ChannelSendError, FailureKind

TOKEN = "EAAG-secret-token"
VERSION = "v26.0"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: Any


def graph_error(status: int, code: int, message: str, **headers: str) -> Response:
    body = {"error": {"message": message, "type": "OAuthException", "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


ANSWERS: dict[str, Callable[[], Response]] = {
    "500": lambda: graph_error(500, 1, "An unknown error occurred"),
    "429": lambda: JSONResponse({}, status_code=429, headers={"Retry-After": "7"}),
    "429-long": lambda: JSONResponse({}, status_code=429, headers={"Retry-After": "3600"}),
    "131026": lambda: graph_error(400, 131026, "Message undeliverable"),
    "130429": lambda: graph_error(400, 130429, "Rate limit hit", **{"Retry-After": "2"}),
    "131047": lambda: graph_error(400, 131047, "Re-engagement message"),
    "190": lambda: graph_error(401, 190, f"Invalid OAuth access token {TOKEN}"),
    "502-html": lambda: PlainTextResponse("<html>bad gateway</html>", status_code=502),
    "200-no-id": lambda: JSONResponse({"messaging_product": "whatsapp"}),
}


class Graph:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.app = Starlette(
            routes=[Route("/{version}/{node}/messages", self.messages, methods=["POST"])]
        )

    async def messages(self, request: Request) -> Response:
        node = request.path_params["node"]
        self.requests.append(
            Recorded(request.url.path, dict(request.headers), await request.json())
        )
        if node == "slow":
            await asyncio.sleep(2)
        if node in ANSWERS:
            return ANSWERS[node]()
        body = await request.json()
        if body.get("status") == "read":
            return JSONResponse({"success": True})
        to = body.get("to") or body.get("recipient")
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.sent-to-{to}"}],
            }
        )


class Server:
    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("graph test server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def graph_server() -> Iterator[tuple[Graph, str]]:
    graph = Graph()
    server = Server(graph.app)
    url = server.start()
    yield graph, url
    server.stop()


@pytest.fixture
def graph(graph_server: tuple[Graph, str]) -> Graph:
    graph_server[0].requests.clear()
    return graph_server[0]


@pytest.fixture
def base_url(graph_server: tuple[Graph, str]) -> str:
    return graph_server[1]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def send(
    client: httpx.AsyncClient,
    base_url: str,
    node: str,
    *,
    to: str | None = "16505551234",
    recipient: str | None = None,
    text: str = "Hello!",
    reply_to: str | None = None,
    timeout: float = 5.0,
) -> SendResult:
    return await whatsapp.send_text(
        client,
        base_url=base_url,
        version=VERSION,
        phone_number_id=node,
        token=TOKEN,
        to=to,
        recipient=recipient,
        text=text,
        reply_to=reply_to,
        timeout=timeout,
    )


async def send_error(
    client: httpx.AsyncClient, base_url: str, node: str, **kw: Any
) -> ChannelSendError:
    with pytest.raises(ChannelSendError) as caught:
        await send(client, base_url, node, **kw)
    assert TOKEN not in str(caught.value)
    return caught.value


async def test_text_is_posted_with_bearer_and_returns_the_wamid(
    client: httpx.AsyncClient, base_url: str, graph: Graph
) -> None:
    result = await send(client, base_url, "106540352242922", text="Hi *there*", reply_to=WAMID)
    assert result == SendResult(channel_message_id="wamid.sent-to-16505551234")
    [request] = graph.requests
    assert request.path == f"/{VERSION}/106540352242922/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"body": "Hi *there*", "preview_url": False},
        "context": {"message_id": WAMID},
    }


async def test_bsuid_goes_in_recipient_when_no_phone_is_known(
    client: httpx.AsyncClient, base_url: str, graph: Graph
) -> None:
    bsuid = "US.13491208655302741918"
    result = await send(client, base_url, "1", to=None, recipient=bsuid)
    assert result.channel_message_id == f"wamid.sent-to-{bsuid}"
    body = graph.requests[0].json
    assert body["recipient"] == bsuid and "to" not in body and "context" not in body


async def test_phone_wins_over_bsuid(
    client: httpx.AsyncClient, base_url: str, graph: Graph
) -> None:
    await send(client, base_url, "1", to="16505551234", recipient="US.1")
    body = graph.requests[0].json
    assert body["to"] == "16505551234" and "recipient" not in body


async def test_server_error_is_retryable(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "500")
    assert (error.retryable, error.status, error.code) == (True, 500, "1")
    assert (
        str(error) == "the channel had a temporary problem (graph 500 1: An unknown error occurred)"
    )
    assert error.kind == FailureKind.TRANSIENT


async def test_429_is_retryable_after_what_the_server_asked(
    client: httpx.AsyncClient, base_url: str
) -> None:
    error = await send_error(client, base_url, "429")
    assert (error.retryable, error.retry_after, error.status, error.code) == (True, 7.0, 429, None)


async def test_retry_after_is_capped(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "429-long")
    assert error.retry_after == 60.0


async def test_undeliverable_is_final(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "131026")
    assert (error.retryable, error.retry_after, error.status, error.code) == (
        False,
        None,
        400,
        "131026",
    )
    assert str(error) == (
        "the customer cannot receive messages from this account "
        "(graph 400 131026: Message undeliverable)"
    )
    assert error.kind == FailureKind.UNDELIVERABLE


async def test_throughput_limit_is_retryable_despite_400(
    client: httpx.AsyncClient, base_url: str
) -> None:
    error = await send_error(client, base_url, "130429")
    assert (error.retryable, error.retry_after, error.status, error.code) == (
        True,
        2.0,
        400,
        "130429",
    )


async def test_outside_window_is_final(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "131047")
    assert (error.retryable, error.code) == (False, "131047")


async def test_token_quoted_back_is_redacted(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "190")
    assert (error.retryable, error.status, error.code) == (False, 401, "190")
    assert "[token]" in str(error)


async def test_non_json_gateway_error_is_retryable(
    client: httpx.AsyncClient, base_url: str
) -> None:
    error = await send_error(client, base_url, "502-html")
    assert (error.retryable, error.status, error.code) == (True, 502, None)
    assert str(error) == "the channel had a temporary problem (graph 502: Bad Gateway)"


async def test_accepted_without_id_is_still_success(
    client: httpx.AsyncClient, base_url: str
) -> None:
    assert await send(client, base_url, "200-no-id") == SendResult(None)


async def test_timeout_is_retryable(client: httpx.AsyncClient, base_url: str) -> None:
    error = await send_error(client, base_url, "slow", timeout=0.2)
    assert error.retryable is True and error.status is None
    assert "(graph timeout: ReadTimeout)" in str(error)


async def test_refused_connection_is_retryable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await send_error(client, f"http://127.0.0.1:{port}", "1")
    assert error.retryable is True and error.status is None


@pytest.mark.parametrize(
    ("to", "recipient", "text"),
    [(None, None, "hi"), ("1", None, ""), ("1", None, "x" * (whatsapp.TEXT_LIMIT + 1))],
    ids=["no-recipient", "empty-text", "too-long"],
)
async def test_unsendable_requests_fail_before_the_network(
    client: httpx.AsyncClient,
    base_url: str,
    graph: Graph,
    to: str | None,
    recipient: str | None,
    text: str,
) -> None:
    error = await send_error(client, base_url, "1", to=to, recipient=recipient, text=text)
    assert error.retryable is False
    assert graph.requests == []


async def test_mark_read_with_typing(
    client: httpx.AsyncClient, base_url: str, graph: Graph
) -> None:
    await whatsapp.mark_read(
        client,
        base_url=base_url,
        version=VERSION,
        phone_number_id="106540352242922",
        token=TOKEN,
        message_id=WAMID,
        timeout=5.0,
    )
    [request] = graph.requests
    assert request.path == f"/{VERSION}/106540352242922/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": WAMID,
        "typing_indicator": {"type": "text"},
    }


async def test_mark_read_without_typing_and_its_errors(
    client: httpx.AsyncClient, base_url: str, graph: Graph
) -> None:
    with pytest.raises(ChannelSendError) as caught:
        await whatsapp.mark_read(
            client,
            base_url=base_url,
            version=VERSION,
            phone_number_id="500",
            token=TOKEN,
            message_id=WAMID,
            typing=False,
            timeout=5.0,
        )
    assert caught.value.retryable is True
    assert "typing_indicator" not in graph.requests[0].json
