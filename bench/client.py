"""The load generator for `/v1/responses`: raw JSON over httpx (not the OpenAI SDK, whose own
parsing would make the client the bottleneck), on uvloop when it is installed. Two shapes of
load: N callers each making one create after another (closed loop), and creates started at a
fixed rate whatever the answers do (open loop; latency counts from the scheduled start, so a
backlog shows up in it). Every answer is checked: 200 and a completed response with text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_IN_FLIGHT = 1000  # connections a fixed-rate run may open (more wait for one)
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


@dataclass
class Phase:
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error is not None]

    @property
    def rps(self) -> float:
        return len(self.ok) / self.wall_s if self.wall_s else 0.0


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
        return Sample(0, None, "stream without a text delta or response.completed")
    return Sample(time.perf_counter() - started, first)


async def _measured(work: Callable[[], Awaitable[None]], phase: Phase) -> Phase:
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    phase.wall_s = time.perf_counter() - wall
    phase.client_cpu_s = time.process_time() - cpu
    return phase


def _client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT)


async def closed_loop(target: Target, callers: int, duration: float, stream: bool) -> Phase:
    """`callers` callers, each starting its next create when its last one is answered."""
    phase = Phase()
    deadline = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def caller(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            phase.samples.append(await create(client, target, next(counter), stream))

    async def work() -> None:
        async with _client(callers) as client:
            await asyncio.gather(*(caller(client) for _ in range(callers)))

    return await _measured(work, phase)


async def fixed_rate(target: Target, rate: float, duration: float, stream: bool) -> Phase:
    """`rate` creates per second for `duration`, each timed from when it was due."""
    phase = Phase()
    count = int(rate * duration)

    async def one(client: httpx.AsyncClient, number: int, due: float) -> None:
        sample = await create(client, target, number, stream)
        if sample.error is None:
            # From when it was due, not when it went out: a late start is the server's delay.
            lag = time.perf_counter() - due - sample.total
            sample.total += lag
            sample.first = sample.first + lag if sample.first is not None else None
        phase.samples.append(sample)

    async def work() -> None:
        async with _client(MAX_IN_FLIGHT) as client:
            tasks: list[asyncio.Task[None]] = []
            start = time.perf_counter()
            for number in range(count):
                due = start + number / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(one(client, number, due)))
            await asyncio.gather(*tasks)

    return await _measured(work, phase)
