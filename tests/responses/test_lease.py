"""A `/v1` response whose process dies is marked `failed` by a process that lives, within
about PARLEY_RESPONSE_LEASE_SECONDS; one whose process lives is never swept, however long it
runs; and a cancel reaches the turn from any replica."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from openai import AsyncOpenAI
from openai.types.responses import Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from parley.responses.lease import ORPHANED_ERROR, ResponseLease
from parley.responses.service import ResponsesService
from parley.store.models import ResponseRecord, utcnow
from parley.testing import OpenAISimulator
from tests.api.test_responses import OPEN, new_token
from tests.conftest import MakeParley, Store
from tests.test_cli import start_serve

LEASE = 2.0
"""Short, so that a test waits seconds, not the default half minute."""


def sdk(url: str, token: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{url}/v1",
        api_key=token,
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )


async def start_api(env: dict[str, str], cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    return await start_serve(env, cwd, command="api", keep_logs=False)


async def settled(client: AsyncOpenAI, response_id: str, timeout: float) -> Response:
    """GET until the response is no longer open, as a polling client does."""

    async def poll() -> Response:
        # Polling is the API's own way to learn a background result; there is no event.
        while (found := await client.responses.retrieve(response_id)).status in OPEN:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return found

    return await asyncio.wait_for(poll(), timeout)


async def upstream_called(openai_sim: OpenAISimulator) -> None:
    await openai_sim.wait_until(lambda: openai_sim.response_requests, 1, 15, "response calls")


async def test_kill_9_mid_response_is_failed_by_the_surviving_process(
    settings_env: dict[str, str],
    make_parley: MakeParley,
    store: Store,
    openai_sim: OpenAISimulator,
    tmp_path: Path,
) -> None:
    survivor = make_parley(parley_response_lease_seconds=LEASE)
    token = await new_token(store, "alice")
    env = {
        **os.environ,
        **settings_env,
        "PARLEY_RESPONSE_LEASE_SECONDS": str(LEASE),
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    openai_sim.latency = 60  # still thinking when the process is killed
    process, url = await start_api(env, tmp_path)
    try:
        async with sdk(url, token) as doomed:
            started = await doomed.responses.create(
                model="default", input="never answered", background=True
            )
            await upstream_called(openai_sim)
    finally:
        process.kill()
        await process.wait()
    killed = time.monotonic()

    async with sdk(survivor.server.url, token) as client:
        # At most a lease after the last heartbeat, plus one sweep interval; slack for load.
        found = await settled(client, started.id, timeout=LEASE * 4 + 10)
        noticed = time.monotonic() - killed
        assert found.status == "failed"
        assert found.error is not None
        assert (found.error.code, found.error.message) == (
            ORPHANED_ERROR["code"],
            ORPHANED_ERROR["message"],
        )
        print(f"kill -9 to failed: {noticed:.2f} s (lease {LEASE} s)")
        # It had used nothing that was recorded, and nothing is made up for it.
        assert await store.rows("SELECT count(*) FROM usage_user_daily") == [(0,)]
        assert await store.rows("SELECT count(*) FROM messages WHERE direction = 'out'") == [(0,)]

        openai_sim.latency = 0
        again = await client.responses.create(model="default", input="after the crash")
        assert (again.status, again.output_text) == ("completed", "Echo: after the crash")


async def test_a_live_process_keeps_a_response_longer_than_the_lease(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    # The upstream timeout is the tests' 5 s, shorter than this answer takes: raised.
    slow = {"parley_response_lease_seconds": LEASE, "openai_timeout": 30_000}
    running = make_parley(**slow)
    watching = make_parley(**slow)  # a second replica, sweeping too
    token = await new_token(store, "bob")
    openai_sim.latency = LEASE * 2.5
    async with sdk(running.server.url, token) as client, sdk(watching.server.url, token) as other:
        background = await client.responses.create(
            model="default", input="slow background", background=True
        )
        blocking = await client.responses.create(model="default", input="slow blocking")
        assert (blocking.status, blocking.output_text) == ("completed", "Echo: slow blocking")
        found = await settled(other, background.id, timeout=30)
        assert (found.status, found.output_text) == ("completed", "Echo: slow background")
    beats = await store.rows("SELECT count(*) FROM responses WHERE heartbeat_at > created_at")
    assert beats == [(2,)]  # renewed while they ran, not only stamped when created


async def test_the_sweep_ends_only_open_responses_left_behind(
    make_parley: MakeParley, store: Store
) -> None:
    # A lease of an hour: the app's own sweeper stays out of the way while rows are set up.
    parley = make_parley(parley_response_lease_seconds=3600)
    token = await new_token(store, "carol")
    old, now = utcnow() - timedelta(hours=2), utcnow()
    cases: dict[str, tuple[str, object, object]] = {
        # name: status, heartbeat_at, created_at (None: keep the row's own)
        "completed": ("completed", old, old),
        "cancelled": ("cancelled", old, old),
        "failed": ("failed", old, old),
        "incomplete": ("incomplete", old, old),
        "orphan": ("in_progress", old, old),
        "orphan_queued": ("queued", old, old),
        "orphan_before_heartbeats": ("in_progress", None, old),
        "young_before_heartbeats": ("in_progress", None, now),
        "renewed": ("in_progress", now, old),
        "running_here": ("in_progress", old, old),  # late, but the sweeper runs it itself
        "unstored_orphan": ("in_progress", old, old),
    }
    ids: dict[str, str] = {}
    async with sdk(parley.server.url, token) as client:
        for name in cases:
            ids[name] = (await client.responses.create(model="default", input=name)).id
    sessions = async_sessionmaker(store.engine, expire_on_commit=False)
    async with sessions() as session:
        for name, (status, heartbeat, created) in cases.items():
            await session.execute(
                update(ResponseRecord)
                .where(ResponseRecord.id == ids[name])
                .values(status=status, heartbeat_at=heartbeat, created_at=created, error=None)
            )
        await session.execute(
            update(ResponseRecord)
            .where(ResponseRecord.id == ids["unstored_orphan"])
            .values(request={"store": False})
        )
        await session.commit()
    lease = ResponseLease(sessions=sessions, running=lambda: [ids["running_here"]], lease=3600)

    swept = await lease.sweep()
    again = await lease.sweep()  # another replica sweeping the same rows: nothing left to do

    orphans = {"orphan", "orphan_queued", "orphan_before_heartbeats", "unstored_orphan"}
    assert sorted(swept) == sorted(ids[name] for name in orphans)
    assert again == []
    async with sessions() as session:
        rows = {r.id: r for r in await session.scalars(select(ResponseRecord))}
    expected = {name: ("failed" if name in orphans else case[0]) for name, case in cases.items()}
    del expected["unstored_orphan"]  # nobody could retrieve it: gone, as its turn would do
    assert {name: rows[ids[name]].status for name in expected} == expected
    assert ids["unstored_orphan"] not in rows
    for name in orphans - {"unstored_orphan"}:
        assert rows[ids[name]].error == ORPHANED_ERROR
        assert rows[ids[name]].completed_at is not None
    for name in ("completed", "cancelled", "failed", "incomplete"):
        assert rows[ids[name]].error is None  # untouched, not re-failed


async def test_a_cancel_on_another_replica_stops_the_turn(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    running, other = make_parley(), make_parley()
    token = await new_token(store, "dave")
    openai_sim.latency = 60
    async with sdk(running.server.url, token) as client, sdk(other.server.url, token) as elsewhere:
        started = await client.responses.create(model="default", input="stop me", background=True)
        await upstream_called(openai_sim)

        cancelled = await elsewhere.responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        # The running replica learns it from the row and ends the turn, long before the model
        # would have answered.
        service: ResponsesService = running.server.app.state.responses
        deadline = time.monotonic() + 15
        while started.id in service.running():
            assert time.monotonic() < deadline, "the turn was not stopped"
            await asyncio.sleep(0.05)
        assert (await client.responses.retrieve(started.id)).status == "cancelled"
    assert await store.rows("SELECT count(*) FROM messages WHERE direction = 'out'") == [(0,)]


async def test_a_blocking_response_whose_upstream_hangs_ends_at_the_upstream_timeout(
    make_parley: MakeParley, store: Store, openai_sim: OpenAISimulator
) -> None:
    # The process lives, so the lease never ends this one: OPENAI_TIMEOUT (per attempt, times
    # OPENAI_MAX_RETRIES + 1) does, well before PARLEY_RESPONSES_WAIT.
    parley = make_parley(openai_timeout=500, openai_max_retries=1)
    token = await new_token(store, "erin")
    openai_sim.latency = 60
    async with sdk(parley.server.url, token) as client:
        began = time.monotonic()
        response = await client.responses.create(model="default", input="hello?")
        took = time.monotonic() - began
    assert response.status == "failed"
    assert response.error is not None and response.error.code == "server_error"
    assert len(openai_sim.response_requests) == 2  # the attempt and its one retry
    assert took < 10
