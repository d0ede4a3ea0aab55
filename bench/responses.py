"""`/v1/responses` on `parley serve` against LiteLLM's proxy, in front of the same simulator.

Three targets, each its own process: the OpenAI simulator itself (the upstream,
bench/upstream.py: what no proxy can beat), `parley serve` on a fresh SQLite file, and LiteLLM's
proxy (installed once into bench/.litellm-venv). They take turns at each load: blocking and
streamed creates from 16 and 64 callers in a closed loop (requests/s), then at a fixed 30
requests/s (latency added over the upstream, p50/p99; for streams the first text delta too).
The client (bench/client.py) posts raw JSON with httpx and checks every answer.

    python bench/responses.py                    # about 4 minutes
    python bench/responses.py --no-litellm       # Parley and the upstream only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.client import Phase, Target, closed_loop, fixed_rate
from bench.measure import pct, ratio
from bench.profile import py_spy
from bench.profile import summarize as summarize_profile
from bench.serve import load_average, parley_serve, serve_process, server_stack
from tests.servers import free_port

ADMIN = "bench-admin"


@dataclass(frozen=True)
class Load:
    kind: str  # "closed": `level` callers; "rate": `level` requests per second
    level: float
    stream: bool

    def __str__(self) -> str:
        shape = f"{self.level:g} callers" if self.kind == "closed" else f"{self.level:g}/s"
        return f"{shape}, {'SSE' if self.stream else 'JSON'}"


@dataclass
class Result:
    target: str
    load: Load
    phase: Phase
    server_cores: float  # the server's CPU during the phase, in cores
    upstream_calls: int


@contextlib.asynccontextmanager
async def upstream(latency: float, stream_delay: float, words: int) -> AsyncIterator[Target]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("upstream.py")), "--port", str(port)]
    argv += ["--latency", str(latency), "--stream-delay", str(stream_delay)]
    argv += ["--words", str(words)]
    async with serve_process("upstream", argv, port=port) as served:
        yield Target("upstream", served.url, "sk-bench", served.pid)


@contextlib.asynccontextmanager
async def parley(upstream_url: str) -> AsyncIterator[Target]:
    env = {
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{upstream_url}/v1",
        "PARLEY_ADMIN_TOKEN": ADMIN,
        "PARLEY_API_RATE_LIMIT": "0",  # the benchmark's one token sends far over 600/min
    }
    async with parley_serve(env) as served, httpx.AsyncClient(base_url=served.url) as http:
        # A user's own token, as real callers have (the admin token takes another path).
        made = await http.post(
            "/admin/users", json={"name": "bench"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        made.raise_for_status()
        yield Target("parley", served.url, made.json()["token"]["token"], served.pid)


@contextlib.asynccontextmanager
async def litellm(upstream_url: str) -> AsyncIterator[Target]:
    from bench.litellm_proxy import MASTER_KEY, litellm_proxy

    async with litellm_proxy(f"{upstream_url}/v1") as served:
        yield Target("litellm", served.url, MASTER_KEY, served.pid)


async def calls_since_last(upstream_url: str) -> int:
    async with httpx.AsyncClient(base_url=upstream_url) as http:
        counts: dict[str, int] = (await http.get("/_bench/stats")).json()
    return sum(n for what, n in counts.items() if what.startswith("POST "))


async def run_phase(target: Target, load: Load, duration: float, upstream_url: str) -> Result:
    if load.kind == "closed":
        phase = await closed_loop(target, int(load.level), duration, load.stream)
    else:
        phase = await fixed_rate(target, load.level, duration, load.stream)
    calls = await calls_since_last(upstream_url)
    return Result(target.name, load, phase, phase.server_cpu_s / phase.wall_s, calls)


async def warm_up(target: Target, upstream_url: str) -> None:
    """First connections, imports, the first user's caches; fails early on errors."""
    for stream in (False, True):
        warm = await closed_loop(target, 4, 2, stream)
        if warm.errors:
            raise RuntimeError(f"{target.name} fails already in the warm-up: {warm.errors[0]}")
    await calls_since_last(upstream_url)


def print_result(result: Result) -> None:
    phase = result.phase
    ok = phase.ok
    totals = [s.total * 1000 for s in ok]
    firsts = [s.first * 1000 for s in ok if s.first is not None]
    first = f"  first delta p50 {pct(firsts, 50):6.1f} p99 {pct(firsts, 99):6.1f}" if firsts else ""
    cores = f"{result.server_cores * 100:.0f}% ({_cpu_ms(result):.1f} ms/req)"
    calls = result.upstream_calls / (len(phase.samples) + phase.untimed)
    print(
        f"{result.target:8} {result.load!s:16} {phase.rps:7.1f} req/s  p50 {pct(totals, 50):6.1f} "
        f"p99 {pct(totals, 99):6.1f} ms{first}  errors {len(phase.errors)}  "
        f"server cpu {cores}  client cpu {phase.client_cpu_s / phase.wall_s * 100:.0f}%  "
        f"upstream calls/req {calls:.1f}",
        flush=True,
    )
    for error in sorted(set(phase.errors))[:3]:
        print(f"         error: {error}")
    if result.load.kind == "rate" and phase.backlog_grew():
        print(
            f"         {result.target} did not keep up with {result.load.level:g}/s: a backlog "
            "grew through the phase, and these latencies are mostly its queueing"
        )


def _ms(result: Result, p: float, first: bool = False) -> float:
    values = [(s.first if first else s.total) for s in result.phase.ok]
    return pct([v * 1000 for v in values if v is not None], p)


def _cpu_ms(result: Result | None) -> float:
    """The server's CPU per successful request: moves less than req/s when other processes
    take the cores, though contention inflates it too."""
    if result is None or not result.phase.ok:
        return float("nan")
    return result.phase.server_cpu_s / len(result.phase.ok) * 1000


def _rps(result: Result | None) -> float:
    return result.phase.rps if result is not None else float("nan")


def _added(result: Result, up: Result, stream: bool) -> str:
    """What `result`'s server adds over the upstream alone, p50 / p99."""
    p50, p99 = (_ms(result, p) - _ms(up, p) for p in (50, 99))
    text = f"{result.target} +{p50:.0f} / +{p99:.0f} ms"
    if stream:
        f50, f99 = (_ms(result, p, True) - _ms(up, p, True) for p in (50, 99))
        text += f" (first delta +{f50:.0f} / +{f99:.0f})"
    return text


def summarize(results: list[Result]) -> None:
    by = {(r.target, r.load): r for r in results}
    print("\nsummary")
    for load in dict.fromkeys(r.load for r in results):
        up, par, lit = (by.get((t, load)) for t in ("upstream", "parley", "litellm"))
        if load.kind == "closed":
            shown = [
                f"{r.target} {r.phase.rps:.1f} ({_cpu_ms(r):.1f} ms CPU/req)"
                for r in (up, par, lit)
                if r is not None
            ]
            versus = (
                f"; Parley/LiteLLM req/s {ratio(_rps(par), _rps(lit))}, "
                f"CPU/req {ratio(_cpu_ms(par), _cpu_ms(lit))}"
                if par and lit
                else ""
            )
            print(f"{load!s:16} req/s: " + ", ".join(shown) + versus)
        elif up is not None:
            added = [_added(r, up, load.stream) for r in (par, lit) if r is not None]
            print(f"{load!s:16} added over the upstream, p50 / p99: " + "; ".join(added))


async def run(args: argparse.Namespace) -> bool:
    callers = [int(c) for c in args.callers.split(",") if c]
    loads = [Load("closed", c, s) for c in callers for s in (False, True)]
    loads += [Load("rate", args.rate, s) for s in (False, True)]
    print(
        f"/v1/responses, model latency {args.latency * 1000:.0f} ms, {args.words} words streamed "
        f"{args.stream_delay * 1000:.0f} ms apart; {args.duration:g} s per phase\n"
        f"Parley: {server_stack()}; {load_average()} at start. Each server, the upstream and "
        "this client are separate processes sharing the machine."
    )
    results: list[Result] = []
    async with contextlib.AsyncExitStack() as servers:
        simulator = upstream(args.latency, args.stream_delay, args.words)
        up = await servers.enter_async_context(simulator)
        targets = [up, await servers.enter_async_context(parley(up.url))]
        if not args.no_litellm:
            targets.append(await servers.enter_async_context(litellm(up.url)))
        for target in targets:
            await warm_up(target, up.url)
        # Targets take turns at each load, so that a pair to compare is measured minutes
        # apart at most, whatever the shared machine's load does meanwhile.
        async with py_spy(targets[1].pid, args.profile):
            for load in loads:
                for target in targets:
                    results.append(await run_phase(target, load, args.duration, up.url))
                    print_result(results[-1])
    summarize(results)
    if args.profile is not None:
        print(f"\nwhere Parley's CPU went over its phases ({args.profile}):")
        print(summarize_profile(args.profile))
    return not any(r.phase.errors for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--callers", default="16,64", help="closed-loop callers, comma-separated")
    parser.add_argument("--rate", type=float, default=30.0, help="fixed rate, requests/s")
    parser.add_argument("--latency", type=float, default=0.2, help="the model's, seconds")
    parser.add_argument("--stream-delay", type=float, default=0.005, help="between deltas, s")
    parser.add_argument("--words", type=int, default=24, help="words in each answer")
    parser.add_argument("--no-litellm", action="store_true", help="Parley and the upstream only")
    parser.add_argument("--profile", type=Path, help="py-spy Parley's phases into this file")
    args = parser.parse_args()
    sys.exit(0 if _run_on_fastest_loop(run(args)) else 1)


def _run_on_fastest_loop(work: Coroutine[None, None, bool]) -> bool:
    """uvloop when installed (a cheaper client), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


if __name__ == "__main__":
    main()
