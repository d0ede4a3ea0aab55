"""Where a server's CPU goes under a benchmark's load: py-spy samples it (`--profile FILE` on
bench/ingest.py and bench/responses.py) and this summarises the samples by package and by
function. py-spy is not a dependency: `pip install py-spy` where you profile.

    python bench/profile.py /tmp/parley-ingest.txt     # summarise a saved profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# The packages Parley's time is told apart by; anything else is "other".
PACKAGES = (
    "parley", "sqlalchemy", "aiosqlite", "sqlite3", "pydantic", "pydantic_core", "fastapi",
    "starlette", "uvicorn", "h11", "httptools", "httpx", "httpcore", "openai", "anyio",
    "structlog", "logging", "json", "asyncio", "prometheus_client", "hmac", "ssl", "uvloop",
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
        *("--output", str(output), "--nonblocking"),
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
    path = found.group("file") if found else frame
    parts = re.split(r"[/\\]", path.replace("site-packages/", "/"))
    for part in reversed(parts[:-1]):
        if part in PACKAGES:
            return part
    stem = Path(path).stem
    return stem if stem in PACKAGES else "other"


def summarize(path: Path, top: int = 15) -> str:
    """Self time by package and by function, and inclusive time of Parley's own modules."""
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    parley_inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        own[frames[-1]] += n
        by_package[package(frames[-1])] += n
        for module in {_parley_module(f) for f in frames} - {None}:
            parley_inclusive[str(module)] += n
    if not total:
        return f"{path}: no samples"
    lines = [f"{total} samples; self time by package:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_package.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("inclusive time of Parley's modules:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in parley_inclusive.most_common(top)]
    return "\n".join(lines)


def _parley_module(frame: str) -> str | None:
    found = FRAME.match(frame)
    file = found.group("file") if found else ""
    if file.startswith("parley/"):  # py-spy's short file names
        return file
    return "parley/" + file.rsplit("/parley/", 1)[1] if "/parley/" in file else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy's raw (collapsed stacks) output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarize(args.profile, args.top))


if __name__ == "__main__":
    main()
