"""Request bodies bounded in size and time on every door, before anything reads them whole.

The clients here are raw sockets, so a test can announce a gigabyte and send a few kilobytes,
or keep streaming, and see the server answer before the body is done: nothing here ever sends
(or makes the server hold) more than a few times a limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from parley.agent.safety import CARD_MASK, TRUNCATED
from parley.api.limits import ADMIN_MAX_BYTES
from parley.testing import OpenAISimulator
from tests.api.test_responses import new_token, sdk, upstream_bodies
from tests.conftest import MakeParley, Parley, Store
from tests.factories import body_bytes, signed_headers, whatsapp_texts

GIGABYTE = 1 << 30
CHUNK = 16 * 1024


class RawClient(asyncio.Protocol):
    """A client socket that keeps whatever the server sent, even when the server then resets
    the connection (it closes with our unread body in its buffer): a StreamReader would raise
    the reset and lose the answer."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def send(self, data: bytes) -> None:
        """Write, waiting (10 s at most) while the server is not reading."""
        assert self.transport is not None
        if not self.closed.done():
            self.transport.write(data)
        await asyncio.wait_for(self.writable.wait(), 10)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()

    async def answer(self, timeout: float) -> tuple[int, bytes]:
        """The status and body of the answer, once all of it (its Content-Length) is in."""
        deadline = time.monotonic() + timeout
        while (found := self._answer()) is None:
            assert not self.closed.done(), f"closed without a whole answer: {self.received!r}"
            assert time.monotonic() < deadline, f"no answer in {timeout} s"
            await asyncio.sleep(0.01)
        return found

    def _answer(self) -> tuple[int, bytes] | None:
        head, found, body = bytes(self.received).partition(b"\r\n\r\n")
        if not found:
            return None
        lines = head.decode().split("\r\n")
        length = next(
            int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")
        )
        return (int(lines[0].split()[1]), body) if len(body) >= length else None


async def connect(parley: Parley) -> RawClient:
    assert parley.server.port is not None
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(RawClient, parley.server.host, parley.server.port)
    return client


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: parley", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def detail(body: bytes) -> Any:
    return json.loads(body)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/webhooks/whatsapp", {"Content-Type": "application/json"}),
        ("/v1/responses", {"Content-Type": "application/json", "Authorization": "Bearer nope"}),
        ("/admin/users", {"Content-Type": "application/json"}),  # and no token at all
    ],
)
async def test_a_body_announcing_a_gigabyte_is_refused_after_a_few_kilobytes(
    parley: Parley, path: str, headers: dict[str, str]
) -> None:
    client = await connect(parley)
    await client.send(head(path, {**headers, "Content-Length": str(GIGABYTE)}) + b"{" * 4096)

    status, body = await client.answer(timeout=5)
    client.close()

    assert status == 413
    if path.startswith("/v1"):
        assert detail(body)["error"]["code"] == "request_too_large"
        assert detail(body)["error"]["type"] == "invalid_request_error"
    elif path.startswith("/admin"):
        assert "too large" in detail(body)["detail"]
    else:
        assert body == b"payload too large"


async def stream_until_answered(
    parley: Parley, path: str, headers: dict[str, str], limit: int
) -> tuple[int, bytes, int]:
    """Send a chunked body, chunk after chunk without end, until the server answers: the
    answer, and how much had been sent by then.

    The body never ends, so any answer is one given while it streams. Past the limit the
    client slows to a chunk per millisecond: on a loaded machine the server's thread may not
    run for a while, and a client writing flat out would reach any fixed amount first."""
    client = await connect(parley)
    await client.send(head(path, {**headers, "Transfer-Encoding": "chunked"}))
    sent = 0
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b" " * CHUNK)
    deadline = time.monotonic() + 10
    while not client.received and not client.closed.done() and time.monotonic() < deadline:
        await client.send(chunk)
        sent += CHUNK
        if sent > limit:
            await asyncio.sleep(0.001)
    status, body = await client.answer(timeout=10)
    client.close()
    return status, body, sent


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/webhooks/whatsapp", {"Content-Type": "application/json"}),
        ("/admin/users", {"Content-Type": "application/json"}),
    ],
)
async def test_a_chunked_body_growing_past_its_limit_is_refused_while_it_streams(
    parley: Parley, path: str, headers: dict[str, str]
) -> None:
    limit = (
        parley.settings.parley_max_webhook_bytes
        if path.startswith("/webhooks")
        else ADMIN_MAX_BYTES
    )

    status, _, sent = await stream_until_answered(parley, path, headers, limit)

    assert status == 413
    assert sent > limit  # refused for its size, once past it


async def test_a_v1_body_past_the_request_limit_is_refused_while_it_streams(
    make_parley: MakeParley,
) -> None:
    parley = make_parley(parley_max_request_bytes=256 * 1024)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer nope"}

    status, body, sent = await stream_until_answered(parley, "/v1/responses", headers, 256 * 1024)

    assert status == 413
    assert detail(body)["error"]["code"] == "request_too_large"
    assert sent > 256 * 1024


async def test_a_body_within_its_limit_reaches_the_route(parley: Parley) -> None:
    # The body held by the limit is handed on whole: FastAPI still reads and validates it.
    almost = b'{"name": "' + b"x" * (ADMIN_MAX_BYTES - 64) + b'"}'
    response = await parley.client.post("/admin/users", content=almost)
    assert response.status_code == 401  # read whole, then refused for its missing token


@pytest.mark.parametrize("path", ["/webhooks/whatsapp", "/v1/responses", "/admin/users"])
async def test_a_body_trickling_in_is_answered_408_when_its_time_is_up(
    make_parley: MakeParley, path: str
) -> None:
    parley = make_parley(parley_body_timeout=0.5)
    client = await connect(parley)
    started = time.monotonic()
    await client.send(head(path, {"Content-Type": "application/json", "Content-Length": "100"}))
    await client.send(b'{"a"')

    async def trickle() -> None:
        for _ in range(90):  # never the whole body: 90 bytes at most, over 90 s
            await asyncio.sleep(0.2)  # the pace of a slow client, not a wait for the server
            await client.send(b" ")

    trickling = asyncio.ensure_future(trickle())
    status, body = await client.answer(timeout=5)
    elapsed = time.monotonic() - started
    # ...and the server closes the connection, however the client goes on trickling.
    await asyncio.wait_for(asyncio.shield(client.closed), 2)
    trickling.cancel()

    assert status == 408
    assert 0.4 < elapsed < 4  # the timeout, not the trickle, ended it
    if path.startswith("/v1"):
        assert detail(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("path", ["/webhooks/whatsapp", "/v1/responses", "/admin/users"])
async def test_a_client_hanging_up_mid_body_is_one_short_line(parley: Parley, path: str) -> None:
    with capture_logs() as logs:
        client = await connect(parley)
        headers = {"Content-Type": "application/json", "Content-Length": "5000"}
        await client.send(head(path, headers))
        await client.send(b'{"half": ')
        client.close()
        await asyncio.wait_for(client.closed, 5)
        deadline = time.monotonic() + 5
        while not any(e["event"] == "http.client_gone" for e in logs):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.02)
        # The server is fine afterwards, and said nothing more about it.
        assert (await parley.client.get("/healthz")).status_code == 200

    gone = [e for e in logs if e["event"] == "http.client_gone"]
    assert len(gone) == 1 and gone[0]["path"] == path
    assert not [e for e in logs if e.get("exc_info") or e["log_level"] in ("error", "critical")]


async def test_a_batch_of_1000_messages_is_acknowledged_fast_and_all_filed(
    parley: Parley,
) -> None:
    payload = whatsapp_texts("34600000001", [f"message {n}" for n in range(1000)])
    body = body_bytes(payload)
    assert len(body) < parley.settings.parley_max_webhook_bytes

    started = time.monotonic()
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    acknowledged = time.monotonic() - started

    assert response.status_code == 200
    assert acknowledged < 2.0
    # While it is filed, the rest of the service still answers.
    started = time.monotonic()
    assert (await parley.client.get("/healthz")).status_code == 200
    assert time.monotonic() - started < 2.0
    await parley.wait_for_rows(
        "SELECT count(*) FROM messages WHERE direction = 'in'", [(1000,)], timeout=60
    )


# --- every text a /v1 caller sends is cut and masked like the user's ------------------------

CARD = "4111 1111 1111 1111"


async def test_instructions_system_developer_and_x_context_are_cut_and_masked(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    parley = make_parley(parley_max_input_chars=300)
    client = sdk(parley, await new_token(store, "mallory"))
    long = "z" * 5000

    response = await client.responses.create(
        model="default",
        instructions=f"Card {CARD}. {long}",
        input=[
            {"role": "system", "content": f"system {CARD} {long}"},
            {"role": "developer", "content": [{"type": "input_text", "text": f"dev {CARD}"}]},
            {"role": "user", "content": "Where is my order?"},
        ],
        extra_body={"x_context": {"note": f"paid with {CARD} {long[:9000]}"}},
    )
    await client.close()

    assert response.status == "completed"
    (body,) = upstream_bodies(openai_sim)
    sent = json.dumps(body)
    assert CARD not in sent and CARD_MASK in body["instructions"]
    assert long not in body["instructions"] and TRUNCATED in body["instructions"]
    texts = {
        item["role"]: [p["text"] for p in item["content"]]
        for item in body["input"]
        if item.get("type", "message") == "message"
    }
    assert texts["system"][0].startswith(f"system {CARD_MASK}")
    assert texts["system"][0].endswith(TRUNCATED) and len(texts["system"][0]) < 400
    assert texts["developer"] == [f"dev {CARD_MASK}"]
    context, said = texts["user"]
    assert context.startswith(f"[Context: note — paid with {CARD_MASK}")
    assert context.endswith(TRUNCATED) and len(context) < 400
    assert said == "Where is my order?"
    # The stored originals are whole, as a user's are.
    stored = await store.rows("SELECT text FROM messages WHERE sender = 'developer' ORDER BY id")
    assert [row[0] for row in stored] == [f"system {CARD} {long}", f"dev {CARD}"]
