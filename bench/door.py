"""The webhook door's own cost per webhook, in this process: no HTTP server, no load generator.

Parley's ASGI app (`parley api`'s: the door, the inbox writer on a fresh SQLite file, no
background loops) gets `--webhooks` signed WhatsApp webhooks straight from a coroutine, 64 in
flight, so the inbox commits them in groups as under load. Reported: the process's CPU per
webhook (all threads: SQLite's included) and the event loop's thread's alone.

The figures move with the machine by ±10 %. `--callgrind` runs the same under valgrind's
callgrind with instrumentation on only around the measured webhooks, and reports machine
instructions per webhook: the same count on every run (±0.5 %), so a change of a few per cent
in the door's own work shows. It does not weigh a cache miss or a system call as time does, so
take it for before/after of code changes, next to the CPU time. It needs `valgrind`
(`apt-get install -y valgrind`) and takes about a minute.

    python bench/door.py                      # CPU per webhook
    python bench/door.py --callgrind          # instructions per webhook
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wrk import signed_bodies
from tests.factories import APP_SECRET

IN_FLIGHT = 64
WARM_UP = 256
READY = "BENCH_DOOR_READY"  # the measured webhooks start one second after this line
DONE = "BENCH_DOOR_DONE"  # and end before this one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=20_000)
    parser.add_argument("--callgrind", action="store_true", help="instructions per webhook")
    parser.add_argument("--pause", type=float, default=0.0, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.callgrind:
        _callgrind(opts.webhooks)
        return
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'door.db'}"
        os.environ.update(
            DATABASE_URL=url,
            META_APP_SECRET=APP_SECRET,
            WHATSAPP_ACCESS_TOKEN="bench",
            OPENAI_API_KEY="sk-bench",
            PARLEY_LOG_LEVEL="WARNING",
        )
        subprocess.run(
            [sys.executable, "-m", "parley", "db", "upgrade"], check=True, capture_output=True
        )
        import uvloop

        uvloop.run(_measure(opts.webhooks, opts.pause))


async def _measure(count: int, pause: float) -> None:
    from parley.app import create_app
    from parley.config import Settings
    from parley.observability.logging import configure_logging

    configure_logging("WARNING")
    bodies = list(signed_bodies(0, count + WARM_UP, 1000))
    app = create_app(Settings(), "api")
    async with app.router.lifespan_context(app):

        async def post(number: int) -> None:
            signature, body = bodies[number]
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/webhooks/whatsapp",
                "headers": [
                    (b"host", b"127.0.0.1"),
                    (b"content-type", b"application/json"),
                    (b"x-hub-signature-256", signature.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
                "query_string": b"",
                "root_path": "",
                "scheme": "http",
                "server": ("127.0.0.1", 80),
                "client": ("127.0.0.1", 5000),
                "http_version": "1.1",
                "asgi": {"version": "3.0"},
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            statuses: list[int] = []

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(scope, receive, send)
            if statuses != [200]:
                raise RuntimeError(f"webhook {number} answered {statuses}")

        async def caller(numbers: range) -> None:
            for number in numbers:
                await post(number)

        async def run(first: int, total: int) -> None:
            end = first + total
            await asyncio.gather(
                *(caller(range(first + k, end, IN_FLIGHT)) for k in range(IN_FLIGHT))
            )

        await run(0, WARM_UP)
        gc.collect()
        gc.freeze()
        if pause:
            print(READY, flush=True)
            await asyncio.sleep(pause)
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        await run(WARM_UP, count)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        loop_cpu = time.thread_time() - loop_cpu
        if pause:
            print(DONE, flush=True)
            await asyncio.sleep(pause)
    print(
        f"{count} webhooks: {count / wall:,.0f}/s in process; CPU {cpu / count * 1e6:.1f} µs "
        f"per webhook (all threads), {loop_cpu / count * 1e6:.1f} µs on the event loop's"
    )


def _callgrind(count: int) -> None:
    """This script under callgrind, instrumented only from READY to DONE."""
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--webhooks",
            str(count),
            "--pause",
            "8",  # valgrind is slow: time for callgrind_control to reach it
        ]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stderr is not None
        for line in child.stdout:
            if line.startswith(READY):
                _control(child.pid, "on")
            elif line.startswith(DONE):
                _control(child.pid, "off")
        report = child.stderr.read()
        if child.wait() != 0:
            sys.exit(f"the measured run failed:\n{report[-2000:]}")
    found = re.search(r"Collected : ([\d,]+)", report)
    if found is None:
        sys.exit(f"no instruction count in callgrind's report:\n{report[-2000:]}")
    instructions = int(found.group(1).replace(",", ""))
    print(f"{count} webhooks: {instructions / count:,.0f} instructions per webhook (callgrind)")


def _control(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)


if __name__ == "__main__":
    main()
