"""Parley's CPU per WhatsApp message, end to end, and whether a turn's cost grows with the
conversation.

Default: `parley serve` (fresh SQLite file) with a zero-latency model gets `--messages`
webhooks over `--conversations` customers, in rounds (each customer's next message once every
customer has its answer, so each message is its own turn and runs compare), and then, as Meta
does, a signed status webhook per answer and status (sent, delivered, read). Reported: Parley's
process CPU (user + system, /proc) per message, of which status webhooks, and its peak RSS.

`--turn-cost`: one customer writes `--turns` messages, one at a time; Parley's CPU is taken
over a block of `--sample` turns around message 10 and at the end. A turn must not cost more
as the conversation grows.

`--capacity`: a model that takes `--latency` (1 s) per call, and `--conversations` (2,000)
customers who each write at once. Parley keeps at most its upstream concurrency cap
(`OPENAI_MAX_CONCURRENCY`, `--cap`) model calls in flight, so the cap is what should bound its
throughput: reported is the model calls in flight on average from the first webhook to the
last answer (read off the simulator's record of each call) against the cap, the most at once,
answers a second, and Parley's peak RSS.

    python bench/e2e.py --messages 2000 --conversations 200
    python bench/e2e.py --turn-cost --turns 1000
    python bench/e2e.py --capacity --conversations 2000 --latency 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.answers import AnswerBook, BenchGraph, marker_reply
from bench.measure import cpu_seconds, cpu_seconds_precise, peak_rss_mib, ratio
from bench.profile import py_spy, summarize
from bench.serve import Served, load_average, parley_serve, server_stack, whatsapp_env
from bench.wrk import WARM_UP_CUSTOMERS, WARM_UP_FROM, WEBHOOK, signed_bodies
from parley.testing import OpenAISimulator, ServerThread
from tests.factories import sample, signed_headers

ANSWER_TIMEOUT = 120.0


@dataclass
class Rig:
    """A running Parley with its simulators, and a client to post webhooks to it."""

    parley: Served
    graph: BenchGraph
    book: AnswerBook
    client: httpx.AsyncClient
    gate: asyncio.Semaphore
    model: OpenAISimulator

    async def post(self, signature: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
        async with self.gate:
            answer = await self.client.post(WEBHOOK, content=body, headers=headers)
        if answer.status_code != 200:
            raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text[:200]}")

    async def messages(
        self,
        start: int,
        count: int,
        conversations: int,
        *,
        first_customer: int = 0,
        timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        """Post messages `start`… and wait (bounded) until each is answered."""
        bodies = signed_bodies(start, count, conversations, first_customer=first_customer)
        await _all(self.post(signature, body) for signature, body in bodies)
        if not await self.book.wait(range(start, start + count), timeout, poll=0.005):
            raise RuntimeError(f"messages {start}… not all answered in {timeout:.0f} s")


async def _all(work: Iterable[Awaitable[None]]) -> None:
    await asyncio.gather(*work)


@contextlib.asynccontextmanager
async def open_rig(parallel: int, latency: float = 0.0, **env: str) -> AsyncIterator[Rig]:
    """Parley and its simulators; by default the model answers at once (Parley's CPU alone)."""
    openai_sim = OpenAISimulator(reply=marker_reply, latency=latency)
    graph = BenchGraph()
    with ServerThread(openai_sim.app) as openai_server, ServerThread(graph.app) as graph_server:
        async with (
            parley_serve(whatsapp_env(openai_server.url, graph_server.url, **env)) as parley,
            httpx.AsyncClient(base_url=parley.url, timeout=60) as client,
        ):
            gate = asyncio.Semaphore(parallel)
            yield Rig(parley, graph, AnswerBook(graph), client, gate, openai_sim)


STATUS_SAMPLE = sample("whatsapp/status_sent.json")


def status_body(recipient: str, message_id: str, status: str) -> bytes:
    """Meta's status webhook for one sent message, from the real sample."""
    payload = copy.deepcopy(STATUS_SAMPLE)
    entry = payload["entry"][0]["changes"][0]["value"]["statuses"][0]
    entry.update(id=message_id, recipient_id=recipient, status=status)
    entry["timestamp"] = str(int(time.time()))
    return json.dumps(payload).encode()


async def post_statuses(rig: Rig, sent: list[tuple[str, str]], statuses: list[str]) -> int:
    """Each sent message's statuses, in Meta's order for that message; messages at once."""

    async def one(recipient: str, message_id: str) -> None:
        for status in statuses:
            body = status_body(recipient, message_id, status)
            await rig.post(signed_headers(body)["X-Hub-Signature-256"], body)

    await _all(one(recipient, message_id) for recipient, message_id in sent)
    return len(sent) * len(statuses)


async def warm_up(rig: Rig, statuses: list[str]) -> float:
    """A few turns first (imports, first connections, caches), then Parley's idle CPU rate
    in cores."""
    await rig.messages(WARM_UP_FROM, 20, 20, first_customer=WARM_UP_CUSTOMERS)
    await post_statuses(rig, list(rig.graph.sent_ids), statuses)
    await asyncio.sleep(1)
    before, started = cpu_seconds(rig.parley.pid), time.monotonic()
    await asyncio.sleep(3)
    return (cpu_seconds(rig.parley.pid) - before) / (time.monotonic() - started)


# --- CPU per message ---------------------------------------------------------------------


@dataclass
class CpuRun:
    messages: int
    answers: int
    status_webhooks: int
    cpu_s: float
    status_cpu_s: float
    wall_s: float
    idle_cores: float
    peak_rss_mib: float
    duplicated: int


async def cpu_per_message(
    messages: int,
    conversations: int,
    statuses: list[str],
    parallel: int,
    profile: Path | None = None,
) -> tuple[CpuRun, dict[str, int] | None]:
    async with open_rig(parallel) as rig:
        pid = rig.parley.pid
        idle = await warm_up(rig, statuses)
        first = done = len(rig.graph.sent_ids)
        status_cpu, posts = 0.0, 0
        async with py_spy(pid, profile):
            before, started = cpu_seconds(pid), time.monotonic()
            for start in range(0, messages, conversations):
                await rig.messages(start, min(conversations, messages - start), conversations)
                await asyncio.sleep(0.05)  # let the delivery's bookkeeping after the send finish
                sent = rig.graph.sent_ids[done:]
                done += len(sent)
                status_before = cpu_seconds(pid)
                posts += await post_statuses(rig, sent, statuses)
                status_cpu += cpu_seconds(pid) - status_before
            # Statuses are filed after their acknowledgement: wait (bounded) until the last
            # one is applied, so that their filing is counted and the check below holds.
            target = done if statuses else 0
            reached = await statuses_applied(rig.parley.db, statuses[-1:], target)
            cpu, wall = cpu_seconds(pid) - before, time.monotonic() - started
        duplicated = rig.book.refresh().duplicated
        rss = peak_rss_mib(pid)
    run = CpuRun(messages, done - first, posts, cpu, status_cpu, wall, idle, rss, duplicated)
    return run, reached


async def statuses_applied(
    db: Path | None, last: list[str], answers: int, timeout: float = 60.0
) -> dict[str, int] | None:
    """Parley's outbound messages by status once `answers` of them reached the `last` status
    (or after `timeout`): the status webhooks' filing is part of their cost."""
    deadline = time.monotonic() + timeout
    while True:
        reached = outbound_statuses(db)
        if not last or reached is None or reached.get(last[0], 0) >= answers:
            return reached
        if time.monotonic() > deadline:
            return reached
        await asyncio.sleep(0.02)


def outbound_statuses(db: Path | None) -> dict[str, int] | None:
    """Parley's outbound messages by status, read from its SQLite file: proof that the status
    webhooks were applied, not only acknowledged. None if the schema moved on."""
    if db is None:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM messages WHERE direction = 'out' GROUP BY status"
            ).fetchall()
    except sqlite3.Error:
        return None
    return {str(status): int(n) for status, n in rows}


def report_cpu(run: CpuRun, statuses: list[str]) -> None:
    per = run.cpu_s / run.messages * 1000
    per_status = run.status_cpu_s / run.status_webhooks * 1000 if run.status_webhooks else 0.0
    print(
        f"{run.messages} messages → {run.answers} answers ({run.duplicated} duplicated), "
        f"{run.status_webhooks} status webhooks ({','.join(statuses) or 'none'}), "
        f"in {run.wall_s:.1f} s"
    )
    print(
        f"Parley CPU: {run.cpu_s:.2f} s = {per:.1f} ms per message end to end, of which status "
        f"webhooks {run.status_cpu_s / run.messages * 1000:.1f} ms ({per_status:.2f} ms each)"
    )
    print(
        f"Parley idle: {run.idle_cores * 1000:.1f} ms CPU per second (included above: "
        f"{run.idle_cores * run.wall_s / run.messages * 1000:.2f} ms per message); "
        f"peak RSS (VmHWM) {run.peak_rss_mib:.0f} MiB"
    )


# --- the cost of a turn as the conversation grows ------------------------------------------


@dataclass
class Block:
    first: int  # the block's first message, counting from 1
    turns: int
    cpu_ms: float  # Parley's CPU per turn, averaged over the block
    wall_ms: float  # from posting a message to its answer at the Graph API, averaged


FRESH_FROM = 10**7  # message numbers of the fresh conversation paired with the long one


async def run_turns(rig: Rig, first: int, last: int, customer: int = 0) -> float:
    """Messages `first`…`last` of `customer`, each once the previous one is answered;
    returns the wall time they took."""
    started = time.monotonic()
    for number in range(first, last + 1):
        await rig.messages(number, 1, 1, first_customer=customer)
        if number % 250 == 0:
            print(f"  … {number} turns", file=sys.stderr)
    return time.monotonic() - started


async def measured_block(
    rig: Rig, first: int, turns: int, customer: int = 0, profile: Path | None = None
) -> Block:
    # schedstat's nanoseconds: a block of a few turns is a few hundred ms of CPU at most.
    await asyncio.sleep(0.1)
    async with py_spy(rig.parley.pid, profile):
        before = cpu_seconds_precise(rig.parley.pid)
        wall = await run_turns(rig, first, first + turns - 1, customer)
        await asyncio.sleep(0.05)  # the last turn's delivery bookkeeping
        cpu = cpu_seconds_precise(rig.parley.pid) - before
    return Block(first % FRESH_FROM, turns, cpu / turns * 1000, wall / turns * 1000)


async def paired(rig: Rig, long_from: int, turns: int) -> tuple[Block, Block]:
    """Turns of the long conversation alternating with turns 10… of a fresh one, each
    measured alone: the machine's load drifts (it is shared), and pairs see the same."""
    await run_turns(rig, FRESH_FROM + 1, FRESH_FROM + 9, customer=1)
    long_turns, fresh_turns = [], []
    for k in range(turns):
        long_turns.append(await measured_block(rig, long_from + k, 1))
        fresh_turns.append(await measured_block(rig, FRESH_FROM + 10 + k, 1, customer=1))

    def mean(blocks: list[Block], first: int) -> Block:
        cpu, wall = (sum(getattr(b, f) for b in blocks) / turns for f in ("cpu_ms", "wall_ms"))
        return Block(first, turns, cpu, wall)

    return mean(long_turns, long_from), mean(fresh_turns, 10)


def block_profiles(profile: Path | None) -> tuple[Path | None, Path | None]:
    """Where the early and the late block's py-spy samples go, if profiling."""
    if profile is None:
        return None, None
    early, late = (f"{profile.stem}-{block}{profile.suffix}" for block in ("early", "late"))
    return profile.with_name(early), profile.with_name(late)


async def turn_cost(
    turns: int, sample_turns: int, profile: Path | None = None
) -> tuple[list[Block], int]:
    """Blocks: the long conversation at message 10 and at `turns`, then its next turns
    paired with a fresh conversation's turns from message 10."""
    early, late = 10, turns - sample_turns + 1
    if late < early + sample_turns:
        raise SystemExit(f"--turns must be at least {10 + 2 * sample_turns - 1}")
    early_profile, late_profile = block_profiles(profile)
    async with open_rig(1) as rig:
        await warm_up(rig, [])
        await run_turns(rig, 1, early - 1)
        blocks = [await measured_block(rig, early, sample_turns, profile=early_profile)]
        await run_turns(rig, early + sample_turns, late - 1)
        blocks.append(await measured_block(rig, late, sample_turns, profile=late_profile))
        blocks += await paired(rig, turns + 1, sample_turns)
        duplicated = rig.book.refresh().duplicated
    return blocks, duplicated


def report_turns(blocks: list[Block], duplicated: int) -> None:
    early, late, long_paired, fresh_paired = blocks
    names = ["", "", " (alternating with the fresh one)", " of a fresh conversation"]
    for block, name in zip(blocks, names, strict=True):
        print(
            f"messages {block.first}-{block.first + block.turns - 1}{name}: "
            f"{block.cpu_ms:.1f} ms of Parley CPU per turn, {block.wall_ms:.1f} ms per turn"
        )
    cpu, wall = ratio(late.cpu_ms, early.cpu_ms), ratio(late.wall_ms, early.wall_ms)
    print(f"late/early (measured minutes apart): CPU {cpu}, wall {wall}")
    cpu = ratio(long_paired.cpu_ms, fresh_paired.cpu_ms)
    wall = ratio(long_paired.wall_ms, fresh_paired.wall_ms)
    print(f"long/fresh (paired, the steadier figure): CPU {cpu}, wall {wall}")
    print(f"duplicated answers {duplicated}")


# --- throughput against the upstream's concurrency cap --------------------------------------


@dataclass
class CapacityRun:
    messages: int
    answers: int
    wall_s: float
    cap: int
    calls: int
    busy_s: float  # the model calls' durations, summed
    peak_in_flight: int
    peak_rss_mib: float
    cpu_s: float
    duplicated: int

    @property
    def in_flight(self) -> float:
        """Model calls in flight on average over the run."""
        return self.busy_s / self.wall_s


async def capacity(
    conversations: int, latency: float, cap: int, parallel: int, worker_concurrency: int | None
) -> CapacityRun:
    """`conversations` customers write at once to a model taking `latency` per call."""
    env = {"OPENAI_MAX_CONCURRENCY": str(cap)}
    if worker_concurrency is not None:
        env["PARLEY_WORKER_CONCURRENCY"] = str(worker_concurrency)
    async with open_rig(parallel, latency, **env) as rig:
        pid = rig.parley.pid
        await warm_up(rig, [])
        first_call = len(rig.model.requests)
        # Three times as long as the cap allows, and a minute: a stall fails loudly. A fresh
        # customer's first turn makes two calls (its server-side conversation, then the answer).
        timeout = 3 * 2 * conversations * latency / cap + 60
        before = cpu_seconds(pid)
        started, wall_started = time.monotonic(), time.time()
        await rig.messages(0, conversations, conversations, timeout=timeout)
        wall, cpu, ended = time.monotonic() - started, cpu_seconds(pid) - before, time.time()
        await asyncio.sleep(2)  # late duplicates would come now
        spans = [
            (r.time, r.answered_at or ended)
            for r in rig.model.requests[first_call:]
            if r.path in MODEL_CALLS
        ]
        run = CapacityRun(
            messages=conversations,
            answers=rig.book.answered(range(conversations)),
            wall_s=wall,
            cap=cap,
            calls=len(spans),
            busy_s=sum(min(end, ended) - max(start, wall_started) for start, end in spans),
            peak_in_flight=most_at_once(spans),
            peak_rss_mib=peak_rss_mib(pid),
            cpu_s=cpu,
            duplicated=rig.book.refresh().duplicated,
        )
    return run


MODEL_CALLS = frozenset({"/v1/responses", "/v1/conversations"})


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The most spans (start, end) open at one moment."""
    edges = sorted(edge for start, end in spans for edge in ((start, 1), (end, -1)))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def report_capacity(run: CapacityRun, latency: float) -> None:
    print(
        f"{run.messages} customers writing at once, model {latency:g} s per call, upstream cap "
        f"{run.cap}: {run.answers} answered ({run.duplicated} duplicated) in {run.wall_s:.1f} s, "
        f"{run.answers / run.wall_s:.1f} answers/s, {run.calls / run.answers:.2f} model calls "
        "per answer"
    )
    print(
        f"model calls in flight: {run.in_flight:.1f} on average = {run.in_flight / run.cap:.0%} "
        f"of the cap, {run.peak_in_flight} at most"
    )
    print(
        f"Parley CPU {run.cpu_s / run.messages * 1000:.1f} ms per message; "
        f"peak RSS (VmHWM) {run.peak_rss_mib:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--conversations", type=int, help="customers (200; with --capacity, 2,000)")
    parser.add_argument("--statuses", default="sent,delivered,read", help="comma-separated")
    parser.add_argument("--parallel", type=int, default=32, help="webhooks in flight")
    parser.add_argument("--turn-cost", action="store_true")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=10, help="turns per measured block")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the measured run (with --turn-cost: both blocks, FILE-early, FILE-late)",
    )
    parser.add_argument("--capacity", action="store_true")
    parser.add_argument("--latency", type=float, default=1.0, help="the model's, s (--capacity)")
    parser.add_argument("--cap", type=int, default=32, help="OPENAI_MAX_CONCURRENCY (--capacity)")
    parser.add_argument(
        "--worker-concurrency", type=int, help="PARLEY_WORKER_CONCURRENCY (--capacity)"
    )
    args = parser.parse_args()
    if args.conversations is None:
        args.conversations = 2000 if args.capacity else 200
    model = (
        f"model taking {args.latency:g} s a call" if args.capacity else "model answering at once"
    )
    print(
        f"server stack: {server_stack()}; {load_average()} at start. The simulators ({model}) "
        "run in this process, on the same machine as Parley."
    )
    if args.capacity:
        run = asyncio.run(
            capacity(
                args.conversations, args.latency, args.cap, args.parallel, args.worker_concurrency
            )
        )
        report_capacity(run, args.latency)
        sys.exit(1 if run.duplicated or run.answers < run.messages else 0)
    if args.turn_cost:
        blocks, duplicated = asyncio.run(turn_cost(args.turns, args.sample, args.profile))
        report_turns(blocks, duplicated)
        for path in block_profiles(args.profile):
            if path is not None:
                print(f"\n{path}:\n{summarize(path)}")
        sys.exit(1 if duplicated else 0)
    statuses = [s for s in args.statuses.split(",") if s]
    cpu_run, reached = asyncio.run(
        cpu_per_message(args.messages, args.conversations, statuses, args.parallel, args.profile)
    )
    report_cpu(cpu_run, statuses)
    if args.profile is not None:
        print(f"\n{args.profile}:\n{summarize(args.profile)}")
    # Warm-up answers included: every answer Parley sent should have reached the last status.
    applied = (reached or {}).get(statuses[-1], 0) if statuses else 0
    print(f"outbound messages by status in Parley's store: {reached}")
    bad_statuses = bool(statuses) and reached is not None and applied < cpu_run.answers
    lost = cpu_run.answers < cpu_run.messages
    sys.exit(1 if cpu_run.duplicated or lost or bad_statuses else 0)


if __name__ == "__main__":
    main()
