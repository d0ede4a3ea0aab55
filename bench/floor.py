"""The floor under `bench/e2e.py`'s CPU per message: what the calls out that every message
needs cost through the clients Parley must use, with nothing of Parley around them.

A message answered on WhatsApp takes three calls out: the read receipt and the reply to Graph
(httpx, on aiohttp's connections: `parley.http_client`), and the model (the openai SDK:
`parley.agent.llm.LLM`). Each is made `--calls` times, 16 at a time as a busy service makes
them, against the simulators in a process of their own, and this process's CPU is divided by
the calls. Their sum is what any Python service on these clients spends per message before it
parses, stores or decides anything; the four webhooks in (the message, then its reply's sent,
delivered and read statuses) come on top (bench/ingest.py's bare reference).

    python bench/floor.py --calls 3000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parley.agent.llm import LLM, create_client
from parley.channels.whatsapp.send import mark_read, send_text
from parley.http_client import create_http_client
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread

PHONE_NUMBER_ID = "106540352242922"  # the samples' business number
CONCURRENT = 16


async def per_call(calls: int, one: Callable[[int], Awaitable[object]]) -> float:
    """This process's CPU per call of `one`, in ms, `CONCURRENT` at a time after a warm-up:
    as a busy service makes them, each wake-up of the event loop serving several."""
    gate = asyncio.Semaphore(CONCURRENT)

    async def gated(n: int) -> None:
        async with gate:
            await one(n)

    await asyncio.gather(*(gated(n) for n in range(100)))
    started = time.process_time()
    await asyncio.gather(*(gated(n) for n in range(calls)))
    return (time.process_time() - started) / calls * 1000


def simulate(pipe: Connection) -> None:
    """The model and Graph simulators, until `pipe` says stop (in a process of their own)."""
    openai_sim, graph = OpenAISimulator(reply=lambda _turn: "hello there"), GraphSimulator()
    with ServerThread(openai_sim.app) as model, ServerThread(graph.app) as graph_server:
        pipe.send((model.url, graph_server.url))
        pipe.recv()


async def calls_out(calls: int) -> dict[str, float]:
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    simulators = multiprocessing.get_context("spawn").Process(target=simulate, args=(theirs,))
    simulators.start()
    model_url, graph_url = await asyncio.to_thread(ours.recv)
    client = create_client(
        api_key="sk-floor", base_url=f"{model_url}/v1", timeout_s=30, max_retries=0
    )
    llm, http = LLM(client), create_http_client(timeout=30)
    graph_at: dict[str, Any] = {"base_url": graph_url, "version": "v23.0", "token": "floor"}
    try:
        return {
            "model (openai SDK)": await per_call(
                calls,
                lambda n: llm.respond(
                    model="gpt-4o-mini", input=[{"role": "user", "content": f"hi {n}"}]
                ),
            ),
            "read receipt (httpx)": await per_call(
                calls,
                lambda n: mark_read(
                    http,
                    **graph_at,
                    phone_number_id=PHONE_NUMBER_ID,
                    message_id=f"wamid.{n}",
                    timeout=30,
                ),
            ),
            "reply (httpx)": await per_call(
                calls,
                lambda n: send_text(
                    http,
                    **graph_at,
                    phone_number_id=PHONE_NUMBER_ID,
                    to="34600000000",
                    recipient=None,
                    text=f"answer {n}",
                    timeout=30,
                ),
            ),
        }
    finally:
        await http.aclose()
        await llm.close()
        ours.send("stop")
        simulators.join(10)


async def main(calls: int) -> None:
    costs = await calls_out(calls)
    for what, ms in costs.items():
        print(f"{what:24s} {ms:6.3f} ms of CPU per call")
    print(f"{'the three, per message':24s} {sum(costs.values()):6.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls of each kind")
    uvloop.run(main(parser.parse_args().calls))
