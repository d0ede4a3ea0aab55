"""Reading Prometheus exposition text as a scraper does, for before/after comparisons (the
registry is process-global, so a test compares figures rather than expecting zeros)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient, url: str = "/metrics") -> tuple[str, Samples]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


async def scrape_until(
    client: httpx.AsyncClient,
    check: Callable[[Samples], bool],
    *,
    url: str = "/metrics",
    timeout: float = 15.0,
    connect_errors: bool = False,
) -> Samples:
    """Scrape until `check` holds (gauges move on their own schedule); with `connect_errors`,
    a server not listening yet is waited for too."""
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while True:
        try:
            _, samples = await scrape(client, url)
        except httpx.ConnectError:
            if not connect_errors or time.monotonic() > deadline:
                raise
        else:
            if check(samples):
                return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never matched; last scrape: {samples}")
        await asyncio.sleep(0.05)
