"""`parley worker --metrics-port`: a worker process, started as deployments start it, serves
`/metrics` with what it did (filing, turns, sends, the backlog), and logs JSON lines only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from parley.app import create_app
from parley.config import Settings
from parley.store.migrate import upgrade
from parley.testing import GraphSimulator, ServerThread
from tests.factories import body_bytes, signed_headers, whatsapp_texts
from tests.observability.scrape import scrape_until, value
from tests.servers import free_port

PARLEY = str(Path(sys.executable).with_name("parley"))
WAIT = 30.0


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """`parley api`'s app in this process: it accepts webhooks and files none."""
    await upgrade(settings.database_url)  # a new SQLite file; PostgreSQL's is migrated already
    server = ServerThread(create_app(settings, "api"), lifespan="on")
    server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()


async def test_worker_serves_metrics(
    api: httpx.AsyncClient,
    settings_env: dict[str, str],
    graph_sim: GraphSimulator,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **settings_env,
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_METRICS_INTERVAL": "0.1",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        worker = await asyncio.create_subprocess_exec(
            PARLEY,
            "worker",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            env=env,
            cwd=tmp_path,
            stdout=handle,
            stderr=handle,
        )
    try:
        body = body_bytes(whatsapp_texts("34615000001", ["hello worker"]))
        response = await api.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
        assert response.status_code == 200
        await graph_sim.wait_for_sends(1, timeout=WAIT)

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            samples = await scrape_until(
                client,
                lambda s: (
                    value(s, "parley_sends_total", channel="whatsapp", outcome="sent", code="") == 1
                ),
                timeout=WAIT,
                connect_errors=True,
            )
            assert value(samples, "parley_webhook_messages_total", channel="whatsapp") == 1
            assert value(samples, "parley_turns_total", outcome="answered") == 1
            assert value(samples, "parley_turn_seconds_count", outcome="answered") == 1
            assert value(samples, "parley_tokens_total", kind="input", model="gpt-5-mini") > 0
            # The door is the api's: the worker accepted no webhook itself.
            assert (
                value(samples, "parley_webhooks_total", channel="whatsapp", outcome="accepted") == 0
            )
            # The backlog is read by the worker too, and shows nothing left waiting.
            await scrape_until(
                client,
                lambda s: (
                    value(s, "parley_backlog_sampled_timestamp_seconds") > 0
                    and value(s, "parley_queue_depth") == 0
                ),
                timeout=WAIT,
            )
            assert (await client.get("/other")).status_code == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), timeout=WAIT)
    output = log.read_text()
    assert code == 0, output[-3000:]
    # PARLEY_LOG_FORMAT=json end to end: every line the process wrote is one JSON object.
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"worker.started", "turn.completed", "delivery.sent", "runtime.closed"} <= events
