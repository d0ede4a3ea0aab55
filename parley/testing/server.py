"""Run any ASGI app with uvicorn on loopback in a background thread.

Tests and `parley demo` need real sockets (the SDKs, retries and timeouts only behave
faithfully over HTTP), but must not block their own event loop, so each server gets a daemon
thread with its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import httpx
import uvicorn

__all__ = ["ServerThread"]


class ServerThread:
    """`ServerThread(app).start()` serves `app` on `http://127.0.0.1:<free port>`."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: Literal["on", "off", "auto"] = "off",
        graceful_timeout: float = 3.0,
        start_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._start_timeout = start_timeout
        # Hung requests (inject_timeout, latency) would otherwise hold shutdown for their delay.
        self._graceful_timeout = graceful_timeout
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan=lifespan,
            loop="asyncio",
            timeout_graceful_shutdown=max(1, round(graceful_timeout)),
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._server.started and self._thread is not None and self._thread.is_alive()

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("ServerThread can only be started once")
        self._thread = threading.Thread(
            target=self._run, name=f"uvicorn-{type(self.app).__name__}", daemon=True
        )
        self._thread.start()
        self._wait_started()
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._server.should_exit = True
        thread.join(timeout=self._graceful_timeout + 5)
        if thread.is_alive():
            # A lifespan or request ignoring cancellation; force the loop to wind down.
            self._server.force_exit = True
            thread.join(timeout=5)

    def _run(self) -> None:
        # uvicorn only captures signals on the main thread, so the test runner keeps its own.
        try:
            self._server.run()
        except BaseException as exc:  # reported by start(); a thread can't raise to its owner
            self._error = exc

    def _wait_started(self) -> None:
        thread = self._thread
        assert thread is not None
        deadline = self._start_timeout
        step = 0.01
        while deadline > 0:
            if self._server.started:
                self.port = self._bound_port()
                return
            if not thread.is_alive():
                raise RuntimeError(f"server failed to start: {self._error!r}") from self._error
            thread.join(timeout=step)
            deadline -= step
        self.stop()
        raise TimeoutError(f"server did not start within {self._start_timeout}s")

    def _bound_port(self) -> int:
        servers = getattr(self._server, "servers", None)
        if servers:
            return int(servers[0].sockets[0].getsockname()[1])
        return self._requested_port

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def wait_until_ready(
    url: str, *, alive: Callable[[], bool] = lambda: True, timeout: float = 30.0
) -> bool:
    """Poll `{url}/readyz` until it answers 200 (True), or `alive()` turns False or the
    timeout passes (False): for Parley processes started by tests, benchmarks and demos."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline and alive():
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return True
            await asyncio.sleep(0.05)
    return False
