"""The bundled OpenAI simulator as its own process, the upstream of bench/responses.py.

In its own process it competes with the load generator for nothing but the machine's cores
(in the benchmark's process it would share one interpreter lock with the client). It answers
after `--latency` seconds with a `--words`-word text, streamed one word per delta with
`--stream-delay` seconds between deltas, so that a first delta arrives before the last byte.
`GET /_bench/stats` counts the requests by path since the last call (and forgets them: the
simulator records every request).

    python bench/upstream.py --port 8100 --latency 0.2
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parley.testing import OpenAISimulator, SimTurn

FILLER = (
    "thanks for asking here is a short answer that a model might give to a customer "
    "with a few more words so that streaming has several deltas to send one by one"
)


def build(latency: float, stream_delay: float, words: int) -> Starlette:
    filler = FILLER.split()

    def reply(turn: SimTurn) -> str:
        asked = turn.user_texts[-1] if turn.user_texts else ""
        return f"About {asked[:40]}: " + " ".join(filler[i % len(filler)] for i in range(words))

    sim = OpenAISimulator(latency=latency, reply=reply, stream_delay=stream_delay)

    async def stats(request: Request) -> Response:
        counts = Counter(f"{r.method} {r.path}" for r in sim.requests)
        # Forget what was recorded, and the stored responses: each benchmark phase stands
        # alone, and tens of thousands of records would only grow the simulator.
        sim.reset()
        return JSONResponse(dict(counts))

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/_bench/stats", stats, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
            Mount("/", sim.app),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--stream-delay", type=float, default=0.005)
    parser.add_argument("--words", type=int, default=24)
    args = parser.parse_args()
    app = build(args.latency, args.stream_delay, args.words)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
