"""Signed WhatsApp webhooks into `parley serve`, against a bare reference on the same stack.

wrk (one thread, bench/webhooks.lua) POSTs pre-signed bodies — one new message id per request,
from `--conversations` customers — first to the bare reference (bench/bare.py: check the HMAC,
answer 200), then to `parley serve` on a fresh SQLite file, and reports for each requests/s,
p50/p99, non-2xx, socket errors and timeouts, and Parley/bare. Then it waits (bounded) until
every message Parley accepted has been answered exactly once at the Graph simulator, and
reports lost and duplicated answers and how long the backlog took to drain. In the closed loop
both are loaded for the whole `--duration`: Parley is given enough distinct bodies for it
(`CLOSED_LOOP_CEILING` a second), so at 8,000 webhooks a second it has some 85,000 messages
to answer afterwards, about 5 minutes on SQLite and longer on one `parley worker`.

With `--database-url` and `--redis-url` (a PostgreSQL server and a Redis database, both
emptied for the run), Parley is scaled out instead: one `parley api` process takes the
webhooks (the process measured against the bare reference) and one `parley worker` files and
answers them. With `--worker-after-load` the worker is stopped for the load and started after
it, so that `parley api` has the cores to itself as the bare app had (the backlog waits in the
inbox meanwhile, and every message must still be answered once).

    python bench/ingest.py                      # closed loop: as fast as 64 connections go
    python bench/ingest.py --rate 500           # p99 at a fixed 500 requests/s
    python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.answers import AnswerBook, BenchGraph, Tally, marker_reply
from bench.measure import cpu_seconds, peak_rss_mib, ratio
from bench.profile import gc_summary, gc_watch_env, py_spy, summarize
from bench.serve import (
    Served,
    load_average,
    parley_api_and_worker,
    parley_serve,
    serve_process,
    server_stack,
    whatsapp_env,
)
from bench.wrk import WEBHOOK, WrkResult, run_wrk, warm_up, write_bodies
from parley.testing import OpenAISimulator, ServerThread
from tests.servers import free_port

# Webhooks Parley acknowledged (each bench body carries one message). Not the filed-messages
# metric: filing runs after the 200, so it lags the acknowledgements under load.
ACCEPTED = re.compile(
    r'^parley_webhooks_total\{channel="whatsapp",outcome="accepted"\} (\S+)$', re.M
)


@dataclass
class Options:
    duration: float = 10.0
    connections: int = 64
    rate: float = 0.0
    latency: float = 0.2
    conversations: int = 1000
    bodies: int = 0  # 0: enough for the run (see `body_count`)
    timeout: float = 10.0
    drain_timeout: float = 900.0  # 10 s of closed loop, ~85,000 messages, drained in ~5 min
    settle: float = 2.0
    profile: Path | None = None  # py-spy Parley during the load, into this file
    gc_stats: Path | None = None  # the garbage collector's work in Parley, into this file
    database_url: str | None = None  # with redis_url: `parley api` and `parley worker`
    redis_url: str | None = None
    worker_after_load: bool = False  # the worker stopped during the load: `parley api` alone


@dataclass
class ParleyRun:
    load: WrkResult
    cpu: float  # Parley's CPU during the load, in cores
    accepted: int  # messages Parley stored and acknowledged, by its own metric
    tally: Tally
    lost: int  # accepted but never answered
    extra: int  # answered though never accepted (should be impossible)
    drain_s: float | None  # None: not drained within --drain-timeout
    peak_rss_mib: float
    turns: int  # model calls for the measured messages: fewer than messages when coalesced
    background_cpu_s: float  # from the load's start to the drain's end: the worker's, or serve's
    background: str  # whose CPU that is

    @property
    def clean(self) -> bool:
        t = self.tally
        return not (self.lost or self.extra or t.duplicated or t.unmarked or t.refused)


# Closed loop: bodies for this many webhooks a second over the whole duration, above any rate
# Parley has reached on two cores, so that Parley is loaded for as long as the bare app (which
# cycles through the same bodies). With fewer, Parley's rate was taken over the 2.5-4 s its
# bodies lasted, its start included, against the bare app's 10 s.
CLOSED_LOOP_CEILING = 16_000


def body_count(opts: Options) -> int:
    """Distinct bodies for Parley: at a fixed rate the run's count, else enough for the whole
    duration (wrk stops early and says so if Parley outruns it)."""
    if opts.bodies:
        return opts.bodies
    per_second = opts.rate * 1.2 if opts.rate else CLOSED_LOOP_CEILING
    return int(per_second * opts.duration) + opts.connections


async def load_bare(bodies: Path, opts: Options) -> tuple[WrkResult, float]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("bare.py")), "--port", str(port)]
    async with serve_process("bare", argv, port=port) as bare:
        await warm_up(bare.url)
        return await _wrk(bare.url, bare.pid, bodies, opts, wrap=True)


async def _wrk(
    url: str, pid: int, bodies: Path, opts: Options, *, wrap: bool
) -> tuple[WrkResult, float]:
    before = cpu_seconds(pid)
    load = await run_wrk(
        url + WEBHOOK,
        bodies,
        duration=opts.duration,
        connections=opts.connections,
        rate=opts.rate,
        timeout=opts.timeout,
        wrap=wrap,
    )
    # Over wrk's whole run: out of bodies, it idles to the end of its duration while the
    # server may still work (`parley serve` files and answers the backlog meanwhile).
    return load, (cpu_seconds(pid) - before) / (load.run_s or load.duration_s)


async def load_parley(bodies: Path, opts: Options, **env: str) -> ParleyRun:
    if opts.gc_stats is not None:
        env = {**env, **gc_watch_env(opts.gc_stats)}
    openai_sim = OpenAISimulator(latency=opts.latency, reply=marker_reply)
    graph = BenchGraph()
    with ServerThread(openai_sim.app) as openai_server, ServerThread(graph.app) as graph_server:
        env = whatsapp_env(openai_server.url, graph_server.url, **env)
        async with parley_process(env, opts) as p:
            if not await AnswerBook(graph).wait(await warm_up(p.url), timeout=60):
                raise RuntimeError("Parley did not answer the warm-up messages within 60 s")
            book = AnswerBook(graph, skip_existing=True)
            before = await accepted_messages(p.url)
            calls_before = len(openai_sim.requests_to("/v1/responses"))
            worker = p.worker
            if worker is not None and opts.worker_after_load:
                await worker.stop()
            background = (worker.pid if worker else p.pid) or 0
            name = "`parley worker`" if worker else "`parley serve` (the door included)"
            background_before = cpu_seconds(background) if background else 0.0
            async with py_spy(p.pid, opts.profile):
                load, cpu = await _wrk(p.url, p.pid, bodies, opts, wrap=False)
            ended = time.monotonic()
            accepted = await accepted_messages(p.url) - before
            if worker is not None and worker.pid is None:
                background = await worker.start()
                name = "`parley worker` (started after the load: its start included)"
            drained = await book.wait(accepted, timeout=opts.drain_timeout)
            drain_s = time.monotonic() - ended if drained else None
            background_cpu_s = cpu_seconds(background) - background_before
            # A late duplicate (a turn run twice) would come after the first answer.
            await asyncio.sleep(opts.settle)
            tally = book.refresh()
            rss = peak_rss_mib(p.pid)
            turns = len(openai_sim.requests_to("/v1/responses")) - calls_before
    lost, extra = max(0, accepted - tally.answered), max(0, tally.answered - accepted)
    return ParleyRun(
        load, cpu, accepted, tally, lost, extra, drain_s, rss, turns, background_cpu_s, name
    )


def parley_process(
    env: dict[str, str], opts: Options
) -> contextlib.AbstractAsyncContextManager[Served]:
    """The process taking the webhooks: `parley serve` on SQLite, or `parley api` (with a
    worker beside it) on PostgreSQL and Redis."""
    if opts.database_url and opts.redis_url:
        return parley_api_and_worker(env, opts.database_url, opts.redis_url)
    return parley_serve(env)


async def accepted_messages(url: str, timeout: float = 15) -> int:
    """Messages Parley accepted, from its metric, once it stops moving (requests wrk gave up
    on at the end may still be committing)."""
    last, deadline = -1, time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            found = ACCEPTED.search((await client.get("/metrics")).text)
            if found is None:
                raise RuntimeError("parley_webhooks_total (accepted) missing from /metrics")
            count = int(float(found.group(1)))
            if count == last:
                return count
            last = count
            await asyncio.sleep(0.5)
    return last


def describe(opts: Options) -> str:
    pace = f"fixed {opts.rate:g} requests/s" if opts.rate else "closed loop"
    beside = "after the load" if opts.worker_after_load else "beside it"
    parley = (
        f"`parley api` on PostgreSQL and Redis, a `parley worker` {beside}"
        if opts.database_url
        else "`parley serve` on SQLite"
    )
    return (
        f"{parley}; "
        f"signed WhatsApp webhooks, wrk -t1 -c{opts.connections} -d{opts.duration:g}s, {pace}; "
        f"{opts.conversations} customers, one new message id per request; "
        f"model latency {opts.latency * 1000:.0f} ms\n"
        f"server stack (Parley and bare): {server_stack()}; {load_average()} at start.\n"
        "The OpenAI and Graph simulators run in this process, on the same machine as the "
        "servers and wrk."
    )


def report_load(name: str, load: WrkResult, cpu: float) -> None:
    # CPU per request moves less than req/s when other processes take the cores (Parley's
    # includes the turns its worker runs meanwhile).
    run = load.run_s or load.duration_s
    per_request = cpu * run / load.completed * 1000 if load.completed else 0.0
    print(f"{name:7} {load.line()}  cpu {cpu * 100:.0f}% of a core, {per_request:.2f} ms/req")
    if load.exhausted:
        print(
            f"        cpu over wrk's whole {run:.1f} s, after its last body too: for `parley "
            "serve`, the backlog's filing and turns included"
        )
    if load.late:
        print(
            f"        {load.late} requests left more than 10 ms behind schedule (worst "
            f"{load.late_max_ms:.0f} ms): the rate was not held, and the latencies miss that wait"
        )
    if load.exhausted:
        print(f"        ran out of its {load.issued} bodies; rate over the load's own span")


def report_parley(run: ParleyRun) -> None:
    t = run.tally
    drain = f"{run.drain_s:.1f} s" if run.drain_s is not None else "NOT within the timeout"
    print(
        f"answers: {run.accepted} accepted (Parley's metric), {t.answered} answered, "
        f"lost {run.lost}, duplicated {t.duplicated}, answers to no message {t.unmarked}, "
        f"sends refused {t.refused}, answered but never accepted {run.extra}"
    )
    print(
        f"drained {drain} after the load, in {run.turns} turns (a customer's messages that "
        f"wait together are answered by one); Parley peak RSS {run.peak_rss_mib:.0f} MiB"
    )
    if run.turns and run.accepted:
        cpu_ms = run.background_cpu_s * 1000
        print(
            f"{run.background}: CPU from the load's start to the drain's end: "
            f"{cpu_ms / run.turns:.1f} ms per turn, {cpu_ms / run.accepted:.1f} ms per message"
        )


async def run(opts: Options, *, bare: bool = True) -> bool:
    print(describe(opts))
    with tempfile.TemporaryDirectory() as folder:
        bodies = Path(folder) / "bodies.txt"
        write_bodies(bodies, body_count(opts), opts.conversations)
        reference = await load_bare(bodies, opts) if bare else None
        parley = await load_parley(bodies, opts)
    if reference is not None:
        report_load("bare", *reference)
    report_load("parley", parley.load, parley.cpu)
    summary: dict[str, object] = {"parley": asdict(parley)}
    if reference is not None:
        ref, par = reference[0], parley.load
        print(
            f"Parley/bare: req/s {ratio(par.rps, ref.rps)}, "
            f"p50 {ratio(par.latency_ms['p50'], ref.latency_ms['p50'])}, "
            f"p99 {ratio(par.latency_ms['p99'], ref.latency_ms['p99'])}"
        )
        summary["bare"] = asdict(ref)
    report_parley(parley)
    if opts.profile is not None:
        print(f"where Parley's CPU went during the load ({opts.profile}):")
        print(summarize(opts.profile))
    if opts.gc_stats is not None:
        print(f"garbage collections in Parley, its start to the drain's end ({opts.gc_stats}):")
        print(gc_summary(opts.gc_stats))
    print("BENCH_RESULT " + json.dumps(summary, default=str))
    return parley.clean and parley.drain_s is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    for name in ("duration", "connections", "rate", "latency", "conversations", "bodies"):
        default = getattr(defaults, name)
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="wrk's, s")
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--no-bare", action="store_true", help="Parley only")
    parser.add_argument("--profile", type=Path, help="py-spy Parley under load into this file")
    parser.add_argument(
        "--gc-stats",
        type=Path,
        help="the garbage collector's work in Parley (bench/gcwatch) into this file",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server's URL (with --redis-url)")
    parser.add_argument("--redis-url", help="a Redis database, emptied for the run")
    parser.add_argument(
        "--worker-after-load",
        action="store_true",
        help="stop `parley worker` for the load and start it after: `parley api` alone on the "
        "cores, as with workers on other machines (the backlog waits in the inbox meanwhile)",
    )
    args = parser.parse_args()
    if bool(args.database_url) != bool(args.redis_url):
        parser.error("--database-url and --redis-url go together")
    if args.worker_after_load and not args.database_url:
        parser.error("--worker-after-load needs --database-url (`parley serve` has no worker)")
    bare = not args.no_bare
    del args.no_bare
    ok = asyncio.run(run(Options(**vars(args)), bare=bare))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
