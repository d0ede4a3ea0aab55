"""The garbage collector's work in a `parley` process, for `bench/ingest.py --gc-stats FILE`.

Python imports a `sitecustomize` module found on `PYTHONPATH` at start, in every process; this
one acts only in a `parley` command, and only with `PARLEY_GCWATCH_OUT` set (the benchmark sets
both for the Parley it starts). From the server's start it times each collection through
`gc.callbacks` (the CPU of the thread that collects: the event loop's, which answers nothing
meanwhile) and counts the objects each freed, by generation, and writes the figures to
`PARLEY_GCWATCH_OUT` as JSON every second and at exit.

`PARLEY_GCWATCH_GARBAGE=S` also keeps, S seconds after the start, 3 seconds of what the
collector freed (`gc.DEBUG_SAVEALL`) and counts it by type into the same file: which objects
made reference cycles. It disturbs the run it measures.
"""

from __future__ import annotations

import atexit
import collections
import gc
import json
import os
import sys
import threading
import time
from typing import Any

OUT = os.environ.get("PARLEY_GCWATCH_OUT")
GARBAGE_AT = os.environ.get("PARLEY_GCWATCH_GARBAGE")


class _Watch:
    def __init__(self, out: str) -> None:
        self.out = out
        self.serving = False
        self.started_cpu = 0.0
        self.cpu_ms: dict[int, list[float]] = collections.defaultdict(list)
        self.freed: collections.Counter[int] = collections.Counter()
        self.garbage: dict[str, int] = {}
        self.lock = threading.Lock()

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started_cpu = time.thread_time()
        elif self.serving:
            generation = info["generation"]
            self.cpu_ms[generation].append((time.thread_time() - self.started_cpu) * 1000)
            self.freed[generation] += info["collected"]

    def figures(self) -> dict[str, Any]:
        generations = {}
        for generation, times in sorted(self.cpu_ms.items()):
            ordered = sorted(times)
            generations[f"gen{generation}"] = {
                "collections": len(ordered),
                "cpu_ms": round(sum(ordered), 1),
                "max_ms": round(ordered[-1], 2),
                "over_5_ms": sum(t > 5 for t in ordered),
                "freed": self.freed[generation],
            }
        return {"generations": generations, "garbage_by_type": self.garbage}

    def write(self) -> None:
        with self.lock, open(self.out, "w") as handle:
            json.dump(self.figures(), handle)

    def write_every_second(self) -> None:
        while True:
            time.sleep(1)
            self.write()

    def keep_garbage(self, after: float) -> None:
        time.sleep(after)
        gc.set_debug(gc.DEBUG_SAVEALL)
        time.sleep(3)
        gc.set_debug(0)
        kept, gc.garbage[:] = list(gc.garbage), []
        counts = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in kept)
        self.garbage = dict(counts.most_common(40))


def _start(watch: _Watch) -> None:
    import uvicorn

    serve = uvicorn.Server.serve

    async def serving(self: uvicorn.Server, *args: Any, **kwargs: Any) -> None:
        watch.serving = True  # what the process did to start (imports, its heap frozen) aside
        threading.Thread(target=watch.write_every_second, daemon=True).start()
        if GARBAGE_AT:
            threading.Thread(
                target=watch.keep_garbage, args=(float(GARBAGE_AT),), daemon=True
            ).start()
        await serve(self, *args, **kwargs)

    uvicorn.Server.serve = serving  # type: ignore[method-assign]
    gc.callbacks.append(watch.callback)
    atexit.register(watch.write)


if OUT and sys.argv and os.path.basename(sys.argv[0]) == "parley":
    _start(_Watch(OUT))
