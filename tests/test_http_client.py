"""The process's httpx client on aiohttp's connections: each way a call fails is the httpx
error of what happened, as callers (Graph sends, media, tools) classify it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from parley.http_client import create_http_client
from tests.conftest import cyclic_garbage

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def _write_json(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/messages"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_an_answer_is_read_as_httpx_reads_it(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await _write_json(writer, b'{"messages": [{"id": "wamid.1"}]}')
        writer.close()

    url = await serve(answer)
    async with create_http_client(timeout=5) as client:
        response = await client.post(url, json={"to": "34600"})
    assert response.status_code == 200
    assert response.json() == {"messages": [{"id": "wamid.1"}]}


async def test_a_read_answer_is_freed_without_the_garbage_collector(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """httpx's response and its bound body stream refer to each other; read whole, the
    response drops the stream, so that reference counting frees it, and the garbage
    collector's pauses on the event loop do not grow with the calls made. What a caller
    reads is unchanged, and a streamed answer still streams."""
    body = b'{"messages": [{"id": "wamid.1"}]}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            await _write_json(writer, body)
        writer.close()

    url = await serve(answer)
    async with create_http_client(timeout=5) as client:
        await client.post(url, json={})  # connections, caches: made before counting
        with cyclic_garbage() as cyclic:
            for _ in range(20):
                response = await client.post(url, json={"to": "34600"})
                assert response.json() == {"messages": [{"id": "wamid.1"}]}
                assert await response.aread() == body == response.content
            del response
        assert cyclic == []
        async with client.stream("POST", url, json={}) as streamed:
            assert b"".join([chunk async for chunk in streamed.aiter_bytes()]) == body


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"SMTP ready\r\n\r\n")
    await writer.drain()
    writer.close()


async def _cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"messa')
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("server", "error"),
    [
        # Hung up after the request was sent: it may have been acted on (not a connect error).
        (_hang_up, httpx.RemoteProtocolError),
        # aiohttp's own error for an answer that is not HTTP, which httpx-aiohttp leaves as is.
        (_not_http, httpx.RemoteProtocolError),
        (_cut_short, httpx.ReadError),
    ],
    ids=["hangs up after the request", "answers not HTTP", "cuts the body short"],
)
async def test_a_failed_answer_is_the_httpx_error_of_what_happened(
    serve: Callable[[Handler], Awaitable[str]], server: Handler, error: type[Exception]
) -> None:
    url = await serve(server)
    async with create_http_client(timeout=5) as client:
        with pytest.raises(error):
            await client.post(url, json={"to": "34600"})


async def test_a_silent_server_is_a_read_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await done.wait()
        writer.close()

    url = await serve(silent)
    async with create_http_client(timeout=5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, json={"to": "34600"}, timeout=0.3)
    done.set()


async def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as probe:  # a port just freed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with create_http_client(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/v1/messages", json={})
