"""Servers under test as their own processes: `parley serve` on a temporary SQLite file, the
bare reference, the OpenAI simulator, LiteLLM's proxy. Each is started, awaited until ready,
and stopped (SIGTERM, then SIGKILL) whatever happens; its output goes to a log file whose tail
is shown if it fails to start."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from tests.servers import free_port

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Served:
    """A server process: its base URL and its pid (to read its CPU time and memory)."""

    url: str
    pid: int
    name: str
    db: Path | None = None  # Parley's SQLite file
    worker: Worker | None = None  # the `parley worker` beside a `parley api`


class Worker:
    """A `parley worker` process, which a benchmark may stop and start again (a new process
    each time) to keep it off the cores while it loads the `parley api` beside it."""

    def __init__(self, env: dict[str, str], cwd: str, log: IO[bytes]) -> None:
        self._env, self._cwd, self._log = env, cwd, log
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> int:
        if self.pid is None:
            self._process = await asyncio.create_subprocess_exec(
                str(BIN / "parley"),
                "worker",
                env={**os.environ, **self._env},
                cwd=self._cwd,
                stdout=self._log,
                stderr=self._log,
                stdin=asyncio.subprocess.DEVNULL,
            )
        assert self._process is not None
        return self._process.pid

    async def stop(self) -> None:
        """SIGTERM, as a deployment stops one: its turns in flight end first."""
        if self._process is not None:
            await _stop(self._process)


@contextlib.asynccontextmanager
async def serve_process(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    cwd: str | None = None,
    timeout: float = 60.0,
) -> AsyncIterator[Served]:
    """Run `argv` (which listens on `port`) until the block ends; ready once `ready_path`
    answers 200."""
    with tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            if not await wait_ready(
                url + ready_path, alive=lambda: process.returncode is None, timeout=timeout
            ):
                raise RuntimeError(f"{name} did not start; its log ends:\n{_tail(log.name)}")
            yield Served(url, process.pid, name)
        finally:
            await _stop(process)


def _tail(path: str, lines: int = 30) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=30)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def wait_ready(url: str, *, alive: Callable[[], bool], timeout: float) -> bool:
    """Poll `url` until it answers 200 (True), or the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline and alive():
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.1)
    return False


@contextlib.asynccontextmanager
async def parley_serve(env: dict[str, str]) -> AsyncIterator[Served]:
    """`parley serve` with `env` over this environment, on a fresh SQLite file."""
    with tempfile.TemporaryDirectory() as folder:
        full = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            "PARLEY_LOG_LEVEL": "WARNING",
            **env,
        }
        port = free_port()
        argv = [str(BIN / "parley"), "serve", "--port", str(port)]
        async with serve_process("parley", argv, port=port, env=full, cwd=folder) as served:
            yield dataclasses.replace(served, db=Path(folder) / "bench.db")


@contextlib.asynccontextmanager
async def parley_api_and_worker(
    env: dict[str, str], database_url: str, redis_url: str
) -> AsyncIterator[Served]:
    """`parley api` (yielded: the door, measured alone) and one `parley worker` (filing and
    answering), on a fresh copy of a migrated database on `database_url`'s PostgreSQL server
    and an emptied Redis database at `redis_url`."""
    from redis import asyncio as redis
    from sqlalchemy.engine import make_url

    from tests.conftest import TEMPLATE_DB, _recreate_database, postgres_template

    await postgres_template(database_url)
    name = f"parley_bench_{os.getpid()}"
    await _recreate_database(database_url, name, template=TEMPLATE_DB)
    client = redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    full = {"DATABASE_URL": url, "REDIS_URL": redis_url, "PARLEY_LOG_LEVEL": "WARNING", **env}
    with (
        tempfile.TemporaryDirectory() as folder,
        tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log") as log,
    ):
        worker = Worker(full, folder, log)
        await worker.start()
        try:
            port = free_port()
            argv = [str(BIN / "parley"), "api", "--port", str(port)]
            async with serve_process("parley", argv, port=port, env=full, cwd=folder) as served:
                yield dataclasses.replace(served, worker=worker)
        finally:
            await worker.stop()


def server_stack() -> str:
    """What uvicorn's "auto" picks in this environment, as `parley serve` and the bare
    reference both run it: uvloop and httptools when installed, else asyncio and h11."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn on {loop} + {http}"


def whatsapp_env(openai_url: str, graph_url: str, **extra: str) -> dict[str, str]:
    """Parley's settings for the WhatsApp benchmarks, against the simulators. The customer
    rate limit is lifted: benchmark customers write far faster than people, and a notice
    instead of an answer would break the one-answer-per-message count."""
    return {
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{openai_url}/v1",
        "GRAPH_API_BASE_URL": graph_url,
        "META_APP_SECRET": "test-app-secret",
        "WHATSAPP_ACCESS_TOKEN": "bench",
        "PARLEY_CUSTOMER_MESSAGES_PER_MINUTE": "1000000",
        **extra,
    }


def load_average() -> str:
    """The machine's 1-minute load average and cores, for the record of how busy it was."""
    with open("/proc/loadavg") as f:
        one = f.read().split()[0]
    return f"load average {one} on {os.cpu_count()} cores"
