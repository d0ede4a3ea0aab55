"""The process's httpx client (Graph sends, media downloads, tools) on aiohttp's connections.

httpx's own transport (httpcore, with anyio and h11 under it) cost about twice the CPU of
aiohttp's per request, measured per Graph POST on loopback: ~2,850 Python calls and
~1.0-1.2 ms against ~1,380 calls and ~0.5-0.6 ms. The client is still httpx's (its request
and response objects, timeouts, proxies from the environment, errors), so callers do not
change; only the connection handling is aiohttp's, through `httpx-aiohttp`, the transport the
openai SDK's `DefaultAioHttpClient` is built on.

One thing is Parley's own: the errors. `httpx-aiohttp` maps any `aiohttp.ClientConnectionError`
to httpx's `ConnectTimeout`, a server that hung up after the request was sent included, and
raises aiohttp's remaining errors (a malformed answer, say) as they are, which a caller
catching `httpx.HTTPError` would miss. Here each becomes the httpx error of what happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def create_http_client(*, timeout: float) -> httpx.AsyncClient:
    """An httpx client on aiohttp's connections, with `timeout` seconds for each phase of a
    request (connect, write, read, pool) unless a call gives its own."""
    return _ReadReleased(timeout=timeout, limits=_LIMITS, transport=_Transport(limits=_LIMITS))


_READ = httpx.ByteStream(b"")


class _ReadReleased(httpx.AsyncClient):
    """An httpx client whose responses, once read, are freed as soon as their caller lets go.

    httpx binds each response's body stream to the response (`BoundAsyncStream`, which times
    it), and the response holds that stream: a reference cycle, with the request, headers and
    aiohttp's response inside it, some fifty objects per call that only the garbage collector
    frees. Its collections run on the event loop, in pauses that every webhook and request in
    flight waits out. A response `send` has read whole (not `stream=True`) needs its stream no
    more: its body is kept, and reading it again returns that. So the stream is replaced by an
    empty one, which breaks the cycle. (The openai SDK's client, on `httpx2`, makes no
    such cycle.)
    """

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        response = await super().send(request, stream=stream, **kwargs)
        if not stream:
            response.stream = _READ
        return response


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError) as error:
            _raise_as_httpx(error, request)
        response.stream = _Body(response.stream, request)
        return response


class _Body(httpx.AsyncByteStream):
    """A response body whose read errors are the httpx errors of what happened."""

    def __init__(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, request: httpx.Request
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)  # what an async transport gives
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError) as error:
            _raise_as_httpx(error, self._request)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except (httpx.TransportError, aiohttp.ClientError) as error:
            _raise_as_httpx(error, self._request)


_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Most specific first: the proxy errors are connector errors, the connect timeout is a
    # server timeout, and every one of them is a connection error.
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
)


def _raise_as_httpx(error: BaseException, request: httpx.Request) -> NoReturn:
    """Raise `error` (aiohttp's, or `httpx-aiohttp`'s mapping of one) as the httpx error of
    what happened; what aiohttp does not say more of is a protocol error (the answer was not
    HTTP as it should be). An httpx error of httpx's own goes on as it is."""
    cause = error.__cause__ if isinstance(error, httpx.TransportError) else error
    for raised, meant in _ERRORS:
        if isinstance(cause, raised):
            raise meant(str(cause) or type(cause).__name__, request=request) from cause
    if isinstance(error, httpx.TransportError):
        raise error
    raise httpx.RemoteProtocolError(str(error) or type(error).__name__, request=request) from error
