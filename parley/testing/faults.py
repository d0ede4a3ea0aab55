"""What both simulators share: recording every request, latency and fault injection, and
async waiting from the test's own event loop.

The simulator's server runs in another thread (see `server.py`), so everything a test reads
or changes here is guarded by a lock, and waiting is cheap polling rather than loop-bound
primitives that would belong to the wrong event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["ApiError", "Fault", "Recorded", "Simulator"]

Handler = Callable[[Request, "Recorded"], Awaitable[Response]]
POLL_INTERVAL = 0.01
HOLD_CHECK_INTERVAL = 0.05
CLIENT_GONE = 499  # nginx's "client closed request": the caller gave up before the answer


@dataclass
class Recorded:
    """One request as the simulator received it. `status` is None while it is still being
    answered (e.g. held by latency), so tests can wait for a request that is in flight, and
    499 when the client hung up before the answer (e.g. it timed out)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    query: dict[str, str]
    body: bytes
    time: float
    status: int | None = None
    # Set by the simulator's handler, e.g. "message" or "receipt" for the Graph API.
    kind: str | None = None
    faulted: bool = False
    answered_at: float | None = None
    """When the simulator finished its answer (`time.time()`): for an accepted send, the
    moment the message counts as sent, whatever becomes of the answer on its way back."""
    answer: Any = None
    """The JSON the simulator answered with, when the handler set it (e.g. a send's id)."""


@dataclass
class Fault:
    status: int | None  # None: answer normally after `delay` (a timeout fault)
    remaining: int | None  # None: forever
    path: str | None
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    method: str | None = None  # None: any method

    def matches(self, path: str, method: str) -> bool:
        return (self.path is None or self.path == path) and (
            self.method is None or self.method == method
        )


class ApiError(Exception):
    """Raised by handlers; rendered in the simulated API's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | str | None = None,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.fields = fields


class Simulator:
    """Base of the simulators. Subclasses build `self.app` from routes wrapped with
    `self.endpoint(handler)` and say how their API shapes errors."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self._lock = threading.Lock()
        self._records: list[Recorded] = []
        self._faults: list[Fault] = []

    # --- the API's own shape, for subclasses -------------------------------------------
    def error_body(
        self, status: int, *, code: int | str | None, message: str | None, **fields: Any
    ) -> dict[str, Any]:
        raise NotImplementedError

    def extra_headers(self) -> dict[str, str]:
        """Headers the real API adds to every answer."""
        return {}

    def reset_state(self) -> None:
        """Forget API state (conversations, ids …); records and faults are reset apart."""

    # --- recording ---------------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def requests_to(self, path: str, *, method: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def reset(self) -> None:
        with self._lock:
            self._records = []
            self._faults = []
        self.reset_state()

    async def wait_for_requests(
        self, n: int, timeout: float = 5.0, path: str | None = None
    ) -> list[Recorded]:
        """Wait until at least `n` requests (to `path`, if given) have arrived."""

        def matching() -> list[Recorded]:
            return [r for r in self.requests if path is None or r.path == path]

        what = f"requests to {path}" if path else "requests"
        return await self.wait_until(matching, n, timeout, what)

    async def wait_until(
        self, select: Callable[[], list[Recorded]], n: int, timeout: float, what: str
    ) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while True:
            found = select()
            if len(found) >= n:
                return found
            if time.monotonic() >= deadline:
                seen = ", ".join(f"{r.method} {r.path} → {r.status}" for r in self.requests)
                raise TimeoutError(
                    f"{type(self).__name__}: expected {n} {what} within {timeout}s, "
                    f"got {len(found)}; all requests so far: [{seen or 'none'}]"
                )
            await asyncio.sleep(POLL_INTERVAL)

    # --- faults ------------------------------------------------------------------------
    def inject(
        self,
        status: int,
        *,
        times: int | None = 1,
        path: str | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        code: int | str | None = None,
        message: str | None = None,
        method: str | None = None,
        **fields: Any,
    ) -> None:
        """The next `times` requests (to `path`, with `method`, if given) get `status` with an
        error body in the API's shape (or `body` verbatim). `times=None` means until
        `clear_faults()`."""
        if body is None:
            body = self.error_body(status, code=code, message=message, **fields)
        fault = Fault(
            status,
            times,
            path,
            body,
            dict(headers or {}),
            method=method.upper() if method else None,
        )
        with self._lock:
            self._faults.append(fault)

    def inject_timeout(
        self, *, times: int | None = 1, delay: float = 30.0, path: str | None = None
    ) -> None:
        """The next `times` requests hang `delay` seconds, then are answered normally."""
        with self._lock:
            self._faults.append(Fault(None, times, path, delay=delay))

    def fail_always(
        self, status: int, *, path: str | None = None, method: str | None = None, **fields: Any
    ) -> None:
        """Upstream down: every request (to `path`, with `method`, if given) gets `status`
        until `clear_faults()`."""
        self.inject(status, times=None, path=path, method=method, **fields)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.matches(path, method):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # --- serving -----------------------------------------------------------------------
    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return await self._serve(request, handler)

        return serve

    async def _serve(self, request: Request, handler: Handler) -> Response:
        record = await self._record(request)
        fault = self._take_fault(record.path, record.method)
        delay = (fault.delay if fault is not None else 0.0) + self.latency
        if delay > 0 and not await _hold(request, delay):
            record.status = CLIENT_GONE
            return Response(status_code=CLIENT_GONE)
        if fault is not None and fault.status is not None:
            record.faulted = True
            response: Response = JSONResponse(
                fault.body, status_code=fault.status, headers=fault.headers
            )
        else:
            response = await self._handle(request, record, handler)
        for name, value in self.extra_headers().items():
            response.headers.setdefault(name, value)
        record.answered_at = time.time()
        record.status = response.status_code
        return response

    async def _handle(self, request: Request, record: Recorded, handler: Handler) -> Response:
        try:
            return await handler(request, record)
        except ApiError as error:
            body = self.error_body(
                error.status, code=error.code, message=error.message, **error.fields
            )
            return JSONResponse(body, status_code=error.status, headers=error.headers)
        except Exception as exc:
            # A bug in a test's callable: show it, and answer as the real API's 500 would.
            traceback.print_exc()
            body = self.error_body(500, code=None, message=f"Simulator error: {exc!r}")
            return JSONResponse(body, status_code=500)

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        record = Recorded(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=_parse_json(raw),
            query=dict(request.query_params),
            body=raw,
            time=time.time(),
        )
        with self._lock:
            self._records.append(record)
        return record


async def _hold(request: Request, seconds: float) -> bool:
    """Sleep `seconds` unless the client hangs up first (a timed-out SDK, a stopped Parley);
    True if the client is still there. Returning early keeps hung requests from holding
    the server's shutdown for their whole delay."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, HOLD_CHECK_INTERVAL))
        if await request.is_disconnected():
            return False
    return True


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None when absent or empty."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
