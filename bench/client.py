"""The load generator for `/v1/responses`: raw JSON over httpx (not the OpenAI SDK, whose own
parsing would make the client the bottleneck), on uvloop when it is installed. Two shapes of
load: N callers each making one create after another (closed loop), and creates started at a
fixed rate whatever the answers do (open loop; latency counts from the scheduled start, so a
backlog shows up in it). Every answer is checked: 200 and a completed response with text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.measure import cpu_seconds

REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # base URL, without /v1
    token: str
    pid: int


@dataclass
class Sample:
    total: float  # seconds to the last byte
    first: float | None  # seconds to the first text delta (streams only)
    error: str | None = None
    due: float = 0.0  # fixed rate: when it was due, in seconds from the phase's start


@dataclass
class Phase:
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    untimed: int = 0  # creates that opened the connections before the clock started
    server_cpu_s: float = 0.0  # the target's, from /proc

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error is not None]

    @property
    def rps(self) -> float:
        return len(self.ok) / self.wall_s if self.wall_s else 0.0

    def backlog_grew(self) -> bool:
        """At a fixed rate: whether the last fifth of the creates took much longer than the
        first fifth (the server fell behind, and the latencies are mostly queueing)."""
        ok = sorted(self.ok, key=lambda s: s.due)
        fifth = len(ok) // 5
        if fifth == 0:
            return False
        early = sorted(s.total for s in ok[:fifth])[fifth // 2]
        late = sorted(s.total for s in ok[-fifth:])[fifth // 2]
        return late > 2 * early + 0.1


def completed_with_text(answer: Any) -> bool:
    """A completed Response whose output holds a non-empty text."""
    if not isinstance(answer, dict) or answer.get("status") != "completed":
        return False
    for item in answer.get("output") or []:
        for part in (item.get("content") or []) if isinstance(item, dict) else []:
            if isinstance(part, dict) and part.get("type") == "output_text" and part.get("text"):
                return True
    return False


async def create(client: httpx.AsyncClient, target: Target, number: int, stream: bool) -> Sample:
    body = json.dumps({"model": "default", "input": f"question {number}", "stream": stream})
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST", f"{target.url}/v1/responses", content=body, headers=headers
        ) as answer:
            if answer.status_code != 200:
                await answer.aread()
                return Sample(0, None, f"HTTP {answer.status_code}: {answer.text[:120]}")
            if stream:
                return await _read_stream(answer, started)
            data = json.loads(await answer.aread())
            if not completed_with_text(data):
                return Sample(0, None, f"not completed with text: {str(data)[:120]}")
            return Sample(time.perf_counter() - started, None)
    except (httpx.HTTPError, ValueError) as exc:
        return Sample(0, None, f"{type(exc).__name__}: {exc}")


async def _read_stream(answer: httpx.Response, started: float) -> Sample:
    first: float | None = None
    tail = b""  # the end of the previous chunk: an event name may straddle two chunks
    seen_completed = False
    async for chunk in answer.aiter_raw():
        window = tail + chunk
        if first is None and b"response.output_text.delta" in window:
            first = time.perf_counter() - started
        seen_completed = seen_completed or b"response.completed" in window
        tail = window[-64:]
    if first is None or not seen_completed:
        ending = tail[-100:].decode(errors="replace").replace("\n", "\\n")
        return Sample(0, None, f"stream without a text delta or response.completed: …{ending}")
    return Sample(time.perf_counter() - started, first)


async def _measured(work: Callable[[], Awaitable[None]], phase: Phase, pid: int) -> Phase:
    cpu, wall, server = time.process_time(), time.perf_counter(), cpu_seconds(pid)
    await work()
    phase.wall_s = time.perf_counter() - wall
    phase.client_cpu_s = time.process_time() - cpu
    phase.server_cpu_s = cpu_seconds(pid) - server
    return phase


# One TLS context for every client: httpx builds one per client otherwise (tens of ms each,
# blocking the loop), although these URLs are plain HTTP.
_TLS = ssl.create_default_context()


class Connections:
    """One httpx client per connection, each with a pool of one: a shared pool of many
    connections costs httpx far more CPU per request as it grows (the client became the
    bottleneck at 64 callers), and a private one keeps each caller on its own connection."""

    def __init__(self) -> None:
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        if self._idle:
            return self._idle.pop()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT, verify=_TLS)
        self._all.append(client)
        return client

    def give_back(self, client: httpx.AsyncClient) -> None:
        self._idle.append(client)

    async def open(self, target: Target, count: int) -> None:
        """Open `count` connections with an untimed create each, before any clock starts."""
        clients = [self.take() for _ in range(count)]
        await asyncio.gather(*(create(c, target, -1, False) for c in clients))
        for client in clients:
            self.give_back(client)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._all))


@contextlib.asynccontextmanager
async def connections(target: Target, count: int) -> AsyncIterator[Connections]:
    pool = Connections()
    try:
        await pool.open(target, count)
        yield pool
    finally:
        await pool.aclose()


async def closed_loop(target: Target, callers: int, duration: float, stream: bool) -> Phase:
    """`callers` callers, each starting its next create when its last one is answered."""
    phase = Phase()
    counter = iter(range(10**9))
    async with connections(target, callers) as pool:
        phase.untimed = callers

        async def caller(deadline: float) -> None:
            client = pool.take()
            while time.perf_counter() < deadline:
                phase.samples.append(await create(client, target, next(counter), stream))

        async def work() -> None:
            deadline = time.perf_counter() + duration
            await asyncio.gather(*(caller(deadline) for _ in range(callers)))

        return await _measured(work, phase, target.pid)


async def fixed_rate(target: Target, rate: float, duration: float, stream: bool) -> Phase:
    """`rate` creates per second for `duration`, each timed from when it was due. A create
    due while every connection is busy opens a new one, as a new caller would."""
    phase = Phase()
    count = int(rate * duration)
    async with connections(target, max(1, int(rate))) as pool:
        phase.untimed = max(1, int(rate))

        async def one(number: int, due: float) -> None:
            client = pool.take()
            sample = await create(client, target, number, stream)
            pool.give_back(client)
            sample.due = number / rate
            if sample.error is None:
                # From when it was due, not when it went out: a late start is the server's.
                lag = time.perf_counter() - due - sample.total
                sample.total += lag
                sample.first = sample.first + lag if sample.first is not None else None
            phase.samples.append(sample)

        async def work() -> None:
            tasks: list[asyncio.Task[None]] = []
            start = time.perf_counter()
            for number in range(count):
                due = start + number / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(one(number, due)))
            await asyncio.gather(*tasks)

        return await _measured(work, phase, target.pid)
