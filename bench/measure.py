"""What the benchmarks read about a process from /proc (CPU time, peak memory) and how they
summarise latencies. Linux only, like the machines the benchmarks run on."""

from __future__ import annotations

import math
import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process, exited threads included, in seconds. Ticks
    of 1/CLK_TCK (10 ms here): fine for totals over many messages, coarse for one turn."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields we want follow its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def cpu_seconds_precise(pid: int) -> float:
    """CPU of the process's live threads in nanoseconds from schedstat, summed: exact enough
    for a single turn; falls back to `cpu_seconds` where schedstat is missing. Threads that
    ended are not counted, which is why `cpu_seconds` is used for totals."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended while we read
    except FileNotFoundError:
        return cpu_seconds(pid)
    return total / 1e9 if total else cpu_seconds(pid)


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"
