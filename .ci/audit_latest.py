"""What can be audited where PyPI's per-version JSON API is out of reach, as on a network that
mirrors only the package index: PyPI's project JSON still answers, and its `vulnerabilities`
are those of the project's latest release. So each pin that *is* the latest release is checked
there; the others are named as not audited. pip-audit cannot do this (it asks per version), so
it is written here, with the standard library only.

Usage: python3 .ci/audit_latest.py constraints.txt [.ci/pip-audit-ignore]
Exit status 1 when a pin has a known vulnerability not in the ignore list, 2 when PyPI does not
answer at all.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def pins(path: str) -> list[tuple[str, str]]:
    lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
    return [tuple(line.split("==", 1)) for line in lines if "==" in line]  # type: ignore[misc]


def project(name: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=20) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def main(constraints: str, ignore_file: str | None = None) -> int:
    ignored = set()
    if ignore_file and Path(ignore_file).exists():
        ignored = {
            line.split()[0]
            for line in Path(ignore_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
    wanted = pins(constraints)
    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda pin: project(pin[0]), wanted))
    if all(data is None for data in found):
        print("NOT AUDITED: PyPI's JSON API does not answer", file=sys.stderr)
        return 2
    vulnerable, unaudited = [], []
    for (name, version), data in zip(wanted, found, strict=True):
        if data is None or data["info"]["version"] != version:
            unaudited.append(f"{name}=={version}")
            continue
        for advisory in data.get("vulnerabilities") or []:
            ids = {advisory.get("id"), *(advisory.get("aliases") or [])}
            if not ids & ignored:
                vulnerable.append(
                    f"{name}=={version}: {advisory.get('id')} {advisory.get('summary') or ''}"
                )
    audited = len(wanted) - len(unaudited)
    print(f"{audited} of {len(wanted)} pins are their project's latest release and were audited")
    if unaudited:
        print("not audited (not the latest release): " + ", ".join(unaudited))
    for line in vulnerable:
        print("VULNERABLE " + line, file=sys.stderr)
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
