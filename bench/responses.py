"""What `/v1/responses` adds to the model's own time, in the embedded mode (`parley serve`).

Starts `parley serve` as its own process on a temporary SQLite file, with the bundled OpenAI
simulator (in this process) answering after `--latency` seconds, makes one user through the
admin API, and sends `--requests` blocking creates with `--parallel` in flight through the
official SDK, then the same number streamed; reports the latency percentiles (and the time to
the first streamed delta) next to the model latency they include.

    python bench/responses.py --requests 400 --parallel 20 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import parley_serve
from parley.testing import OpenAISimulator, ServerThread

ADMIN = "bench-admin"


async def run(requests: int, parallel: int, latency: float) -> None:
    openai_sim = OpenAISimulator(latency=latency)
    with ServerThread(openai_sim.app) as openai_server:
        env = {
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"{openai_server.url}/v1",
            "PARLEY_ADMIN_TOKEN": ADMIN,
            "PARLEY_API_RATE_LIMIT": "0",
        }
        async with parley_serve(env) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                made = await http.post(
                    "/admin/users",
                    json={"name": "bench"},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
                made.raise_for_status()
                token = made.json()["token"]["token"]
            async with AsyncOpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0) as sdk:
                blocking = await _load(sdk, requests, parallel, stream=False)
                streamed = await _load(sdk, requests, parallel, stream=True)
    print(
        f"{requests} requests each way, {parallel} in flight, model latency {latency * 1000:.0f} ms"
    )
    _report("blocking create, whole answer", [total for total, _ in blocking])
    _report("streamed create, whole answer", [total for total, _ in streamed])
    _report("streamed create, first delta", [first for _, first in streamed])


async def _load(
    sdk: AsyncOpenAI, requests: int, parallel: int, *, stream: bool
) -> list[tuple[float, float]]:
    gate = asyncio.Semaphore(parallel)
    timings: list[tuple[float, float]] = []

    async def one(number: int) -> None:
        async with gate:
            started = time.perf_counter()
            first = 0.0
            if stream:
                events = await sdk.responses.create(
                    model="default", input=f"question {number}", stream=True
                )
                async for event in events:
                    if event.type == "response.output_text.delta" and not first:
                        first = time.perf_counter() - started
            else:
                answer = await sdk.responses.create(model="default", input=f"question {number}")
                assert answer.status == "completed", answer.status
            timings.append((time.perf_counter() - started, first))

    await asyncio.gather(*(one(n) for n in range(requests)))
    return timings


def _report(what: str, values: list[float]) -> None:
    values = sorted(values)

    def pct(p: int) -> float:
        return values[min(len(values) - 1, len(values) * p // 100)] * 1000

    print(f"{what:32} p50 {pct(50):7.1f} ms  p95 {pct(95):7.1f} ms  p99 {pct(99):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2, help="model latency, seconds")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.parallel, args.latency))


if __name__ == "__main__":
    main()
