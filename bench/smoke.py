"""CI's smoke run of the benchmarks: the webhook door and `/v1/responses` of `parley serve`
under a small load (about 10 s of load in all), failing on any error, never on speed.

It exits non-zero on a non-2xx answer, a socket error or timeout, a failed or incomplete
response, or a WhatsApp message lost or answered twice; it prints the figures, but no figure
is judged. Needs only `pip install -e '.[test]'` and wrk (`apt-get install -y wrk`).

    python bench/smoke.py
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import Options, body_count, load_parley, report_load, report_parley
from bench.responses import Load, parley, print_result, run_phase, upstream
from bench.wrk import write_bodies

INGEST = Options(
    duration=4, connections=16, rate=20, latency=0.05, conversations=40, drain_timeout=60, settle=1
)


async def smoke_ingest() -> list[str]:
    with TemporaryDirectory() as folder:
        bodies = Path(folder) / "bodies.txt"
        write_bodies(bodies, body_count(INGEST), INGEST.conversations)
        run = await load_parley(bodies, INGEST)
    report_load("parley", run.load, run.cpu)
    report_parley(run)
    load, tally = run.load, run.tally
    failures = {
        "no webhook was acknowledged": load.ok == 0,
        f"{load.non_2xx} non-2xx answers": load.non_2xx > 0,
        f"{load.socket_errors} socket errors": load.socket_errors > 0,
        f"{load.errors['timeout']} timeouts": load.errors["timeout"] > 0,
        f"Parley accepted {run.accepted} but acknowledged {load.ok}": run.accepted < load.ok,
        "the backlog did not drain": run.drain_s is None,
        f"{run.lost} messages lost": run.lost > 0,
        f"{tally.duplicated} duplicated answers": tally.duplicated > 0,
        f"{tally.unmarked} answers to no message": tally.unmarked > 0,
        f"{tally.refused} sends refused by the Graph API": tally.refused > 0,
        f"{run.extra} answers to messages never accepted": run.extra > 0,
    }
    return [f"ingest: {what}" for what, failed in failures.items() if failed]


async def smoke_responses() -> list[str]:
    failures: list[str] = []
    async with upstream(0.05, 0.002, 12) as up, parley(up.url) as target:
        for load in (Load("closed", 4, False), Load("closed", 4, True), Load("rate", 10, True)):
            result = await run_phase(target, load, 1.5, up.url)
            print_result(result)
            phase = result.phase
            if not phase.ok:
                failures.append(f"/v1 {load}: no successful response")
            failures += [f"/v1 {load}: {error}" for error in sorted(set(phase.errors))[:5]]
    return failures


async def smoke() -> list[str]:
    if shutil.which("wrk") is None:
        return ["wrk is not installed (apt-get install -y wrk)"]
    return await smoke_ingest() + await smoke_responses()


def main() -> None:
    started = time.monotonic()
    failures = asyncio.run(smoke())
    took = time.monotonic() - started
    for failure in failures:
        print(f"FAILED {failure}")
    print(f"benchmark smoke: {'FAILED' if failures else 'ok'} in {took:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
