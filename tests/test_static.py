"""The code passes its linters and its type check (the versions constraints.txt pins), so
that what CI runs is what a contributor's editor says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"


def test_ruff_finds_nothing_and_the_code_is_formatted() -> None:
    _run("ruff", "check", "--quiet", ".")
    _run("ruff", "format", "--check", "--quiet", ".")


@pytest.mark.timeout(300)
def test_the_package_and_the_benchmarks_type_check(tmp_path: Path) -> None:
    # A cache of its own: a stale one from another checkout must not decide the result.
    cache = str(tmp_path / "mypy")
    _run("mypy", "--explicit-package-bases", "--cache-dir", cache, "parley", "bench")
