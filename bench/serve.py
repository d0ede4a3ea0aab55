"""`parley serve` as its own process on a temporary SQLite file, for the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from parley.testing import wait_until_ready
from tests.servers import free_port


@contextlib.asynccontextmanager
async def parley_serve(env: dict[str, str]) -> AsyncIterator[str]:
    """Start `parley serve` with `env` over this environment; yields its base URL."""
    with tempfile.TemporaryDirectory() as folder:
        full = {
            **os.environ,
            "DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            "PARLEY_LOG_LEVEL": "WARNING",
            **env,
        }
        port = free_port()
        parley = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("parley")),
            "serve",
            "--port",
            str(port),
            env=full,
            cwd=folder,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            if not await wait_until_ready(url, alive=lambda: parley.returncode is None):
                raise RuntimeError("parley serve did not start")
            yield url
        finally:
            parley.terminate()
            await asyncio.wait_for(parley.wait(), timeout=30)
