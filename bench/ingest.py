"""Webhook acknowledgement latency and end-to-end throughput of `parley serve` (embedded mode).

Meta's target for a webhook endpoint: median ≤ 250 ms, under 1 % over 1 s. This starts
`parley serve` as its own process on a temporary SQLite file, with the bundled simulators (in
this process) as OpenAI and the Graph API, sends it signed WhatsApp webhooks (one message
each), and reports the acknowledgement latency percentiles and how long until every customer
was answered.

    python bench/ingest.py --messages 2000 --conversations 200 --parallel 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import parley_serve
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.factories import body_bytes, signed_headers, whatsapp_texts


async def run(messages: int, conversations: int, parallel: int, latency: float) -> None:
    openai_sim, graph_sim = OpenAISimulator(latency=latency), GraphSimulator()
    with ServerThread(openai_sim.app) as openai_server, ServerThread(graph_sim.app) as graph_server:
        env = {
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"{openai_server.url}/v1",
            "GRAPH_API_BASE_URL": graph_server.url,
            "META_APP_SECRET": "test-app-secret",
            "WHATSAPP_ACCESS_TOKEN": "bench",
            "PARLEY_WORKER_CONCURRENCY": "32",
        }
        async with parley_serve(env) as url:
            latencies = await _send(url, messages, conversations, parallel)
            sent = time.perf_counter()
            await _wait_answered(graph_sim, conversations)
            drained = time.perf_counter() - sent
    latencies.sort()
    total = sum(latencies)
    print(f"{messages} webhooks, {conversations} customers, {parallel} in flight")
    print(
        f"ack latency ms: p50 {_pct(latencies, 50):.1f}  p95 {_pct(latencies, 95):.1f}  "
        f"p99 {_pct(latencies, 99):.1f}  max {latencies[-1] * 1000:.1f}  "
        f"mean {statistics.mean(latencies) * 1000:.1f}"
    )
    print(f"over 1 s: {sum(1 for x in latencies if x > 1)}; summed ack time {total:.1f} s")
    print(f"answers drained {drained:.1f} s after the last ack; {len(graph_sim.sends)} sends")


def _pct(values: list[float], pct: int) -> float:
    return values[min(len(values) - 1, len(values) * pct // 100)] * 1000


async def _send(url: str, messages: int, conversations: int, parallel: int) -> list[float]:
    gate = asyncio.Semaphore(parallel)
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, number: int) -> None:
        body = body_bytes(whatsapp_texts(f"3471{number % conversations:07d}", [f"m{number}"]))
        async with gate:
            started = time.perf_counter()
            response = await client.post(
                "/webhooks/whatsapp", content=body, headers=signed_headers(body)
            )
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(one(client, n) for n in range(messages)))
    return latencies


async def _wait_answered(graph_sim: GraphSimulator, conversations: int) -> None:
    # Every customer gets at least one answer; coalescing may answer several messages at once.
    def customers() -> list[object]:
        return list({(s.json or {}).get("to") for s in graph_sim.sends})

    await graph_sim.wait_until(customers, conversations, timeout=600, what="customers answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2, help="model latency, seconds")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.conversations, args.parallel, args.latency))


if __name__ == "__main__":
    main()
