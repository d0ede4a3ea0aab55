"""`/readyz`: every dependency with its own status, and 503 as soon as one is not ok, so that
a load balancer never sends work to a process that would answer every customer with the
fallback, refuse every webhook, or fail every request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from parley.app import create_app
from parley.config import Settings
from parley.testing import ServerThread
from tests.conftest import BACKENDS, MakeParley, Parley, connections_refused
from tests.servers import free_port


async def readyz(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


async def test_ready_with_each_dependency_reported(parley: Parley) -> None:
    code, body = await readyz(parley.client)
    assert code == 200 and body["status"] == "ok", body
    checks = body["checks"]
    assert checks["database"] == {"status": "ok"}
    assert checks["queue"] == {"status": "ok", "backend": parley.settings.queue_backend}
    assert checks["upstream"] == {"status": "ok"}
    assert checks["channels"] == {
        "status": "ok",
        "channels": {"instagram": "ok", "messenger": "ok", "whatsapp": "ok"},
    }
    assert (await parley.client.get("/healthz")).json() == {"status": "ok"}


async def test_no_upstream_key_is_not_ready(make_parley: MakeParley) -> None:
    app = make_parley(openai_api_key=None, openai_base_url="https://api.openai.com/v1")
    code, body = await readyz(app.client)
    assert code == 503 and body["status"] == "unavailable"
    upstream = body["checks"]["upstream"]
    assert upstream["status"] == "error" and "OPENAI_API_KEY" in upstream["error"]
    assert body["checks"]["database"]["status"] == "ok"


async def test_a_channel_without_its_secret_is_not_ready(make_parley: MakeParley) -> None:
    app = make_parley(meta_app_secret=None, messenger_access_token=None)
    code, body = await readyz(app.client)
    assert code == 503
    channels = body["checks"]["channels"]
    assert channels["status"] == "error"
    # Instagram still has its own app's secret; Messenger answers nobody; WhatsApp is stuck.
    assert channels["channels"]["instagram"] == "ok"
    assert channels["channels"]["messenger"] == "off"
    assert channels["channels"]["whatsapp"].startswith("META_APP_SECRET is not set")
    assert "WHATSAPP_ACCESS_TOKEN is set" in channels["error"]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"], indirect=True)
async def test_a_store_and_queue_out_of_reach_are_not_ready(
    settings: Settings, database_url: str
) -> None:
    """An API process whose Redis is gone, and whose PostgreSQL goes after it started (it
    migrates at start, so it needs the database then): each is reported down, the rest ok."""
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with ServerThread(create_app(down, "api"), lifespan="on") as server:
        async with (
            connections_refused(database_url),
            httpx.AsyncClient(base_url=server.url, timeout=15) as client,
        ):
            code, body = await readyz(client)
    assert code == 503 and body["status"] == "unavailable"
    checks = body["checks"]
    assert checks["database"]["status"] == "error"
    assert checks["queue"]["status"] == "error" and checks["queue"]["backend"] == "redis"
    assert checks["upstream"] == {"status": "ok"}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgres"], indirect=True)
async def test_a_busy_pool_does_not_make_the_database_look_down(settings: Settings) -> None:
    """Every pooled connection taken (turns and delivery in a burst): the database check has
    a connection of its own, so a busy process is not taken out of its load balancer."""
    app = create_app(settings, "api")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://parley") as client,
    ):
        # A process that has run a while: its accounts were read (and are served while a
        # later read is under way).
        assert (await readyz(client))[0] == 200
        engine = app.state.runtime.engine
        held: list[AsyncConnection] = []
        try:
            # Every connection of the pool, each given time to open (a loaded machine takes a
            # while to start a PostgreSQL backend) …
            for _ in range(engine.pool.size()):
                async with asyncio.timeout(10):
                    held.append(await engine.connect())
            # … and not one more: no overflow past the pool.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    held.append(await engine.connect())
            code, body = await readyz(client)
        finally:
            for connection in held:
                await connection.close()
    assert code == 200, body
    assert body["checks"]["database"] == {"status": "ok"}
