"""Parley as it is deployed at scale: `parley api` and `parley worker` processes on one
PostgreSQL and one Redis of their own (the fault tests stop and wipe them), under load."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from parley.testing import (
    GraphSimulator,
    OpenAISimulator,
    SimTurn,
    wait_until_ready,
)
from tests.conftest import TEMPLATE_DB, WHATSAPP_TOKEN, _recreate_database, postgres_template
from tests.factories import APP_SECRET, body_bytes, signed_headers, whatsapp_texts
from tests.servers import PostgresServer, RedisServer, free_port

PARLEY = str(Path(sys.executable).with_name("parley"))
ACK = re.compile(r"\[(c\d+-m\d+)\]")
_numbers = itertools.count(1)


def ack(turn: SimTurn) -> str:
    """Echo every message of the turn, so the sends show which messages a turn answered."""
    return "ack " + " ".join(turn.user_texts)


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("cluster-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("cluster-pg"))
    server.start()
    yield server
    server.stop(remove=True)


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log: Path
    url: str | None = None


@dataclass
class Cluster:
    """Any number of `parley api` and `parley worker` processes with one environment."""

    env: dict[str, str]
    folder: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def api_urls(self) -> list[str]:
        return [p.url for p in self.processes if p.url and p.process.returncode is None]

    async def start(self, apis: int, workers: int) -> None:
        await asyncio.gather(
            *(self.start_api() for _ in range(apis)),
            *(self.start_worker() for _ in range(workers)),
        )

    async def start_api(self) -> Process:
        port = free_port()
        process = await self._spawn(f"api-{port}", "api", "--port", str(port))
        process.url = f"http://127.0.0.1:{port}"
        await self._wait_ready(process)
        return process

    async def start_worker(self, concurrency: int = 16) -> Process:
        number = next(_numbers)
        process = await self._spawn(f"worker-{number}", "worker", "--concurrency", str(concurrency))
        await self._wait_for_log(process, "worker.started")
        return process

    async def _spawn(self, name: str, *args: str) -> Process:
        log = self.folder / f"{name}.log"
        handle = log.open("wb")
        process = await asyncio.create_subprocess_exec(
            PARLEY, *args, env=self.env, cwd=self.folder, stdout=handle, stderr=handle
        )
        handle.close()
        entry = Process(name, process, log)
        self.processes.append(entry)
        return entry

    async def _wait_ready(self, process: Process) -> None:
        def alive() -> bool:
            return process.process.returncode is None

        if not await wait_until_ready(process.url or "", alive=alive):
            raise AssertionError(f"{process.name} not ready:\n{process.log.read_text()[-3000:]}")

    async def _wait_for_log(self, process: Process, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in process.log.read_text(errors="replace"):
                return
            if process.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"{process.name}: no {text}:\n{process.log.read_text()[-3000:]}")

    def workers(self) -> list[Process]:
        return [
            p
            for p in self.processes
            if p.name.startswith("worker") and p.url is None and p.process.returncode is None
        ]

    async def stop(self) -> None:
        for entry in self.processes:
            if entry.process.returncode is None:
                entry.process.send_signal(signal.SIGTERM)
        for entry in self.processes:
            try:
                await asyncio.wait_for(entry.process.wait(), timeout=30)
            except TimeoutError:
                entry.process.kill()
                await entry.process.wait()


@pytest.fixture
async def cluster(
    cluster_postgres: PostgresServer,
    cluster_redis: RedisServer,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    openai_server: tuple[OpenAISimulator, object],
    graph_server: tuple[GraphSimulator, object],
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    base = cluster_postgres.url
    await postgres_template(base)
    name = f"parley_cluster_{os.getpid()}_{next(_numbers)}"
    await _recreate_database(base, name, template=TEMPLATE_DB)
    cluster_redis.wipe()
    openai_sim.reply = ack
    env = {
        **os.environ,
        "DATABASE_URL": make_url(base).set(database=name).render_as_string(hide_password=False),
        "REDIS_URL": cluster_redis.url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"{openai_server[1].url}/v1",  # type: ignore[attr-defined]
        "OPENAI_MAX_RETRIES": "4",
        "OPENAI_TIMEOUT": "10000",
        "GRAPH_API_BASE_URL": graph_server[1].url,  # type: ignore[attr-defined]
        "GRAPH_TIMEOUT": "3",
        "META_APP_SECRET": APP_SECRET,
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
        "PARLEY_RECONCILE_INTERVAL": "1",
        "PARLEY_RECONCILE_AFTER": "3",
        "PARLEY_QUEUE_LEASE_MS": "3000",
        "PARLEY_SHUTDOWN_GRACE": "5",
        "PARLEY_LOG_FORMAT": "json",
    }
    cluster = Cluster(env, tmp_path)
    try:
        yield cluster
    finally:
        await cluster.stop()


def phone(conversation: int) -> str:
    return f"3470{conversation:07d}"


@dataclass
class Checkpoint:
    """Holds the load once `after` webhooks are acknowledged, until the test sets `resume`:
    so that a fault is injected while webhooks are still to come, however fast they are
    acknowledged."""

    after: int
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)


async def send_load(
    cluster: Cluster,
    *,
    conversations: int,
    per_conversation: int,
    parallel: int = 64,
    checkpoint: Checkpoint | None = None,
) -> int:
    """Each customer writes their messages one after another (each webhook acknowledged
    before the next, as a phone does); customers write at the same time. Webhooks go to the
    API processes in turn and are re-delivered on any failure, as Meta does.

    Returns:
        How many deliveries had to be repeated.
    """
    gate = asyncio.Semaphore(parallel)
    retries = 0
    acknowledged = 0
    turn = itertools.count()

    async def hold() -> None:
        nonlocal acknowledged
        acknowledged += 1
        if checkpoint is not None and acknowledged >= checkpoint.after:
            checkpoint.reached.set()
            await asyncio.wait_for(checkpoint.resume.wait(), timeout=60)

    async def customer(client: httpx.AsyncClient, number: int) -> None:
        nonlocal retries
        for index in range(per_conversation):
            body = body_bytes(whatsapp_texts(phone(number), [f"[c{number}-m{index}]"]))
            async with gate:
                while True:
                    urls = cluster.api_urls
                    url = urls[next(turn) % len(urls)]
                    try:
                        response = await client.post(
                            f"{url}/webhooks/whatsapp", content=body, headers=signed_headers(body)
                        )
                        if response.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    retries += 1
                    await asyncio.sleep(0.2)
            await hold()

    async with httpx.AsyncClient(timeout=15) as client:
        await asyncio.gather(*(customer(client, n) for n in range(conversations)))
    return retries


def answered(graph_sim: GraphSimulator) -> dict[str, list[list[str]]]:
    """Per customer, the message ids each reply acknowledged, in the order they were sent."""
    replies: dict[str, list[list[str]]] = defaultdict(list)
    for send in graph_sim.sends:
        body = send.json or {}
        replies[str(body.get("to"))].append(ACK.findall(body.get("text", {}).get("body", "")))
    return replies


async def wait_all_answered(
    graph_sim: GraphSimulator, *, conversations: int, per_conversation: int, timeout: float
) -> None:
    expected = conversations * per_conversation
    deadline = time.monotonic() + timeout
    while True:
        seen = {i for acks in answered(graph_sim).values() for reply in acks for i in reply}
        if len(seen) >= expected:
            return
        if time.monotonic() > deadline:
            others = [r for r in graph_sim.sends if not ACK.search(str(r.json))]
            raise AssertionError(
                f"{len(seen)} of {expected} messages answered in {timeout}s; "
                f"{len(others)} other replies (fallbacks?): {[r.json for r in others[:3]]}"
            )
        await asyncio.sleep(0.1)


async def assert_all_answered_once_in_order(
    graph_sim: GraphSimulator,
    *,
    conversations: int,
    per_conversation: int,
    resends: int = 0,
    timeout: float = 120,
) -> None:
    """Wait for every message's answer, give a wrong second answer a moment to show, check."""
    load = {"conversations": conversations, "per_conversation": per_conversation}
    await wait_all_answered(graph_sim, **load, timeout=timeout)
    await asyncio.sleep(1)
    assert_exactly_once_in_order(graph_sim, **load, resends=resends)


def assert_exactly_once_in_order(
    graph_sim: GraphSimulator, *, conversations: int, per_conversation: int, resends: int = 0
) -> None:
    """Every message answered by exactly one reply, replies in each customer's order.

    Args:
        resends: how many byte-identical re-sends of one reply are tolerated: the documented
            window of a sender killed between the Graph API call and its commit.
    """
    replies = answered(graph_sim)
    assert sorted(replies) == sorted(phone(n) for n in range(conversations))
    repeated = 0
    for number in range(conversations):
        acks = replies[phone(number)]
        unique = [reply for i, reply in enumerate(acks) if i == 0 or reply != acks[i - 1]]
        repeated += len(acks) - len(unique)
        flat = [mid for reply in unique for mid in reply]
        assert flat == [f"c{number}-m{i}" for i in range(per_conversation)], (number, acks)
    assert repeated <= resends, f"{repeated} replies were sent twice"
