"""Signed webhook bodies for wrk, and one wrk run with bench/webhooks.lua, parsed.

wrk (C, one thread) is the load generator for the webhook door: it is not the bottleneck at
the rates a Python server reaches. Its Lua cannot compute an HMAC, so the bodies are signed
here, each a new message id from one of many customers, marked `mk<n>x` so that the answer
to message n can be found at the Graph simulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.factories import APP_SECRET, whatsapp_texts

LUA = Path(__file__).with_name("webhooks.lua")
BENCH_LINE = "BENCH_JSON "
WEBHOOK = "/webhooks/whatsapp"
# Warm-up messages and customers, numbered apart from the measured ones.
WARM_UP_FROM = 10**8
WARM_UP_CUSTOMERS = 10**6


def phone(customer: int) -> str:
    return f"3471{customer:07d}"


def marker(number: int) -> str:
    return f"mk{number}x"


def signed_bodies(
    start: int, count: int, conversations: int, *, first_customer: int = 0
) -> Iterator[tuple[str, bytes]]:
    """(signature, body) of messages `start` … `start + count - 1`, message n from customer
    `first_customer + n % conversations`. A template with placeholders keeps this fast: wrk
    may need tens of thousands."""
    template = json.dumps(whatsapp_texts("PHONEPH", ["TEXTPH"]), ensure_ascii=False)
    key = APP_SECRET.encode()
    for number in range(start, start + count):
        body = (
            template.replace("PHONEPH", phone(first_customer + number % conversations))
            .replace("TEXTPH", f"hello {marker(number)}")
            .replace('"id": "wamid.test', f'"id": "wamid.bench{number:09d}', 1)
            .encode()
        )
        yield "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(), body


def write_bodies(path: Path, count: int, conversations: int) -> None:
    """`count` signed bodies for bench/webhooks.lua, one "signature<TAB>body" per line."""
    with path.open("wb") as out:
        for signature, body in signed_bodies(0, count, conversations):
            out.write(signature.encode() + b"\t" + body + b"\n")


async def warm_up(url: str, count: int = 20) -> range:
    """Post `count` warm-up messages from as many customers, one at a time (first
    connections, imports, caches, the account's rows); returns their numbers."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        bodies = signed_bodies(WARM_UP_FROM, count, count, first_customer=WARM_UP_CUSTOMERS)
        for signature, body in bodies:
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
            (await client.post(WEBHOOK, content=body, headers=headers)).raise_for_status()
    return range(WARM_UP_FROM, WARM_UP_FROM + count)


@dataclass(frozen=True)
class WrkResult:
    duration_s: float  # the load's: out of bodies, from the first request to the last answer
    completed: int
    issued: int
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]
    late: int
    late_max_ms: float
    exhausted: bool
    run_s: float = 0.0  # wrk's whole run, the idle end after the last body included

    @property
    def rps(self) -> float:
        return self.completed / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def socket_errors(self) -> int:
        return self.errors["connect"] + self.errors["read"] + self.errors["write"]

    def line(self) -> str:
        lat = self.latency_ms
        return (
            f"{self.rps:8.0f} req/s  p50 {lat['p50']:7.1f} ms  p99 {lat['p99']:7.1f} ms  "
            f"max {lat['max']:7.1f} ms  2xx {self.ok}  non-2xx {self.non_2xx}  "
            f"socket errors {self.socket_errors}  timeouts {self.errors['timeout']}"
        )


def parse(output: str) -> WrkResult:
    lines = [line for line in output.splitlines() if line.startswith(BENCH_LINE)]
    if not lines:
        raise RuntimeError(f"wrk printed no {BENCH_LINE.strip()} line:\n{output}")
    data = json.loads(lines[-1][len(BENCH_LINE) :])
    # Out of bodies, wrk idles until its duration ends: count only the span of the load.
    duration = data["span_ms"] / 1000 if data["exhausted"] else data["duration_us"] / 1e6
    return WrkResult(
        duration_s=duration,
        completed=data["completed"],
        issued=data["issued"],
        statuses={int(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        late=data["late"],
        late_max_ms=data["late_max_ms"],
        exhausted=data["exhausted"],
        run_s=data["duration_us"] / 1e6,
    )


async def run_wrk(
    url: str,
    bodies: Path,
    *,
    duration: float,
    connections: int,
    rate: float = 0,
    timeout: float = 10,
    wrap: bool = False,
) -> WrkResult:
    """One wrk run against `url` (its path is the webhook's), bounded by `duration`."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    env = {"BENCH_BODIES": str(bodies), "BENCH_RATE": str(rate), "BENCH_WRAP": "1" * wrap}
    process = await asyncio.create_subprocess_exec(
        *(wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"),
        *(f"--timeout={max(1, round(timeout))}s", "-s", str(LUA), url),
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    # wrk stops itself after `duration`; the margin covers its start and connection set-up.
    out, _ = await asyncio.wait_for(process.communicate(), timeout=duration + timeout + 30)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited {process.returncode}:\n{out.decode(errors='replace')}")
    return parse(out.decode(errors="replace"))
