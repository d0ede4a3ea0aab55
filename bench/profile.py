"""Where a server's CPU goes under a benchmark's load: py-spy samples it (`--profile FILE` on
bench/ingest.py and bench/responses.py) and this summarises the samples by package and by
function. py-spy is not a dependency: `pip install py-spy` where you profile.

    python bench/profile.py /tmp/parley-ingest.txt     # summarise a saved profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import linecache
import os
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# A thread whose innermost Python line is one of these is blocked in C, not computing:
# py-spy's own idle detection does not work in every container, so samples are sorted here.
WAITING = re.compile(r"\.(get|wait|poll|select|acquire|join|sleep|recv|accept)\(|^\s*sleep\(")
# The packages Parley's time is told apart by; anything else is "other".
PACKAGES = (
    "parley", "sqlalchemy", "aiosqlite", "sqlite3", "pydantic", "pydantic_core", "fastapi",
    "starlette", "uvicorn", "h11", "httptools", "httpx", "httpcore", "openai", "anyio",
    "structlog", "logging", "json", "asyncio", "prometheus_client", "hmac", "ssl", "uvloop",
    "selectors", "threading", "queue", "concurrent", "typing", "dataclasses", "enum",
)  # fmt: skip


@contextlib.asynccontextmanager
async def py_spy(pid: int, output: Path | None) -> AsyncIterator[None]:
    """Sample `pid` with py-spy for the block (nothing when `output` is None)."""
    if output is None:
        yield
        return
    # The venv's bin may not be on PATH when the script is run by the venv's python.
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    process = await asyncio.create_subprocess_exec(
        *(exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"),
        # Not pausing Parley to sample it; full paths, to read the line a thread waits on.
        *("--output", str(output), "--nonblocking", "--full-filenames"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        await asyncio.wait_for(process.wait(), timeout=60)


def package(frame: str) -> str:
    found = FRAME.match(frame)
    parts = re.split(r"[/\\]", found.group("file") if found else frame)
    for part in reversed(parts[:-1]):
        if part in PACKAGES:
            return part
    stem = Path(parts[-1]).stem
    return stem if stem in PACKAGES else "other"


def waiting(frame: str) -> bool:
    """Whether a thread stopped at `frame` waits (its line calls a blocking function)."""
    found = FRAME.match(frame)
    if not found or not found.group("line"):
        return False
    return bool(WAITING.search(linecache.getline(found.group("file"), int(found.group("line")))))


def parley_function(frame: str) -> str | None:
    found = FRAME.match(frame)
    file = found.group("file") if found else ""
    if "/parley/" not in file or file.endswith("/parley/cli.py"):  # cli.py: every stack's root
        return None
    return f"{found.group('func') if found else frame} (parley/{file.rsplit('/parley/', 1)[1]})"


def summarize(path: Path, top: int = 12) -> str:
    """Of the samples where a thread was busy (not waiting): self time by package and by
    function, and the time inside Parley's own functions (inclusive)."""
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        if waiting(frames[-1]):
            continue
        busy += n
        own[_short(frames[-1])] += n
        by_package[package(frames[-1])] += n
        for name in {parley_function(f) for f in frames} - {None}:
            inside[str(name)] += n
    if not busy:
        return f"{path}: no busy samples"
    lines = [f"{busy} busy samples of {total} (the rest: threads waiting); self time by package:"]
    lines += [f"  {n / busy:6.1%}  {name}" for name, n in by_package.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {n / busy:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("time inside Parley's functions (inclusive):")
    lines += [f"  {n / busy:6.1%}  {name}" for name, n in inside.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (…/site-packages/pkg/mod.py:12)` as `func (pkg/mod.py:12)`."""
    return re.sub(r"\(.*/(site-packages|python3\.\d+|bench)/", "(", frame)


GC_WATCH = Path(__file__).with_name("gcwatch")
"""`bench/gcwatch/sitecustomize.py`: the garbage collector's work in a `parley` process."""


def gc_watch_env(out: Path) -> dict[str, str]:
    """The environment that has a `parley` process write its collections to `out`."""
    path = os.pathsep.join(p for p in (str(GC_WATCH), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PARLEY_GCWATCH_OUT": str(out)}


def gc_summary(out: Path) -> str:
    """A line per generation of what `bench/gcwatch` wrote: collections, their CPU on the
    event loop's thread (in all, the longest, how many over 5 ms) and the objects they freed
    (those only a collection frees: reference cycles)."""
    if not out.exists():
        return "(nothing written: did the process start?)"
    figures = json.loads(out.read_text())
    lines = [
        f"  {name}: {g['collections']} collections, {g['cpu_ms']:.0f} ms of CPU in all, "
        f"longest {g['max_ms']:.1f} ms, {g['over_5_ms']} over 5 ms; {g['freed']} objects freed"
        for name, g in figures["generations"].items()
    ]
    kept = figures["garbage_by_type"].items()
    lines += [f"  cyclic garbage of 3 s: {n} {kind}" for kind, n in kept]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy's raw (collapsed stacks) output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarize(args.profile, args.top))


if __name__ == "__main__":
    main()
