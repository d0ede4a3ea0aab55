"""One big signed WhatsApp webhook (1,000 messages) into `parley serve`, and what the rest of the
process sees while it is filed.

Meta batches: one POST may carry hundreds of messages. This posts one body of `--messages`
messages from `--customers` customers and reports how long the 200 took, how long until every
message was filed (Parley's own `parley_webhook_messages_total`), when the first of the batch's
answers was sent, and, polled all along until every message was filed, `/readyz` (any non-200,
the slowest answer) and a `/v1/responses` call after another (the slowest). Then it waits
(bounded) until every message was answered, and reports lost and duplicated answers.

    python bench/batch.py                                   # SQLite, a fresh file
    python bench/batch.py --database-url postgresql+asyncpg://…/db --redis-url redis://…
    PARLEY_FILER_CHUNK=100000 python bench/batch.py         # a body in one transaction
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.answers import AnswerBook, BenchGraph, marker_reply
from bench.serve import load_average, parley_serve, whatsapp_env
from bench.wrk import WEBHOOK, marker, phone, warm_up
from parley.testing import OpenAISimulator, ServerThread
from tests.factories import APP_SECRET, whatsapp_texts

FILED = re.compile(r'^parley_webhook_messages_total\{channel="whatsapp"\} (\S+)$', re.M)
ADMIN = "bench-admin-token"


def batch_body(messages: int, customers: int) -> bytes:
    """One webhook: one change per customer, message n (marked) from customer n % customers."""
    payload = whatsapp_texts(phone(0), [])
    template = payload["entry"][0]["changes"][0]
    changes = []
    for customer in range(customers):
        change = json.loads(json.dumps(template))
        texts = [f"hello {marker(n)}" for n in range(customer, messages, customers)]
        change["value"] = whatsapp_texts(phone(customer), texts)["entry"][0]["changes"][0]["value"]
        changes.append(change)
    payload["entry"][0]["changes"] = changes
    return json.dumps(payload).encode()


@dataclass
class Watch:
    readyz: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    v1: list[tuple[int, float]] = field(default_factory=list)


async def poll_readyz(client: httpx.AsyncClient, watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status = (await client.get("/readyz")).status_code
        except httpx.TransportError:
            status = 0
        watch.readyz.append((status, time.perf_counter() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.05)


async def call_v1(client: httpx.AsyncClient, token: str, watch: Watch, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        started = time.perf_counter()
        try:
            answer = await client.post(
                "/v1/responses", json={"model": "default", "input": "hi"}, headers=headers
            )
            status = answer.status_code
            if status != 200 and not watch.v1:
                print(f"/v1/responses answered {status}: {answer.text[:300]}", flush=True)
        except httpx.TransportError:
            status = 0
        watch.v1.append((status, time.perf_counter() - started))


async def filed(client: httpx.AsyncClient) -> int:
    found = FILED.search((await client.get("/metrics")).text)
    return int(float(found.group(1))) if found else 0


async def run(opts: argparse.Namespace) -> None:
    openai_sim = OpenAISimulator(reply=marker_reply)
    graph = BenchGraph()
    extra = {"PARLEY_ADMIN_TOKEN": ADMIN, "PARLEY_API_RATE_LIMIT": "0"}
    if opts.database_url:
        extra["DATABASE_URL"] = opts.database_url
    if opts.redis_url:
        extra["REDIS_URL"] = opts.redis_url
    body = batch_body(opts.messages, opts.customers)
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    with ServerThread(openai_sim.app) as openai_server, ServerThread(graph.app) as graph_server:
        env = whatsapp_env(openai_server.url, graph_server.url, **extra)
        async with (
            parley_serve(env) as served,
            httpx.AsyncClient(base_url=served.url, timeout=60) as client,
        ):
            warmed = await warm_up(served.url)
            book = AnswerBook(graph)
            await book.wait(warmed, timeout=60)
            made = await client.post(
                "/admin/users", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            made.raise_for_status()
            token = made.json()["token"]["token"]
            before = await filed(client)
            print(
                f"{opts.messages} messages from {opts.customers} customers, {len(body)} bytes; "
                f"{load_average()}",
                flush=True,
            )
            watch, stop = Watch(), asyncio.Event()
            async with (
                httpx.AsyncClient(base_url=served.url, timeout=60) as ready_client,
                httpx.AsyncClient(base_url=served.url, timeout=60) as v1_client,
            ):
                watchers = [
                    asyncio.create_task(poll_readyz(ready_client, watch, stop)),
                    asyncio.create_task(call_v1(v1_client, token, watch, stop)),
                ]
                started = time.perf_counter()
                headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
                answer = await client.post(WEBHOOK, content=body, headers=headers)
                acked = time.perf_counter() - started
                first: float | None = None  # the first of the batch's answers
                while await filed(client) < before + opts.messages:
                    book.refresh()
                    if first is None and book.answered(range(opts.messages)):
                        first = time.perf_counter() - started
                    if time.perf_counter() - started > opts.timeout:
                        break
                    await asyncio.sleep(0.05)
                filing = time.perf_counter() - started
                stop.set()
                await asyncio.gather(*watchers)
            answered = await book.wait(range(opts.messages), timeout=opts.timeout)
            tally = book.refresh()
    not_ok = sum(1 for status, _ in watch.readyz if status != 200)
    v1_bad = sum(1 for status, _ in watch.v1 if status != 200)
    print(f"ack: {answer.status_code} after {acked * 1000:.0f} ms")
    print(f"filed {opts.messages} messages {filing:.2f} s after the POST")
    if first is not None:
        print(f"first answer sent {first:.2f} s after the POST, before all were filed")
    print(
        f"/readyz: {len(watch.readyz)} polls, {not_ok} not 200, slowest "
        f"{max(s for _, s in watch.readyz) * 1000:.0f} ms"
    )
    if watch.v1:
        print(
            f"/v1/responses: {len(watch.v1)} calls, {v1_bad} not 200, slowest "
            f"{max(s for _, s in watch.v1) * 1000:.0f} ms"
        )
    print(
        f"answered {book.answered(range(opts.messages))} of {opts.messages} "
        f"(all: {answered}), duplicated {tally.duplicated}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
