"""Liveness, readiness and metrics: what load balancers and Prometheus ask."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from parley import readiness
from parley.deps import RuntimeDep

router = APIRouter(tags=["health"])
CHECK_TIMEOUT = 5.0
"""Seconds each dependency gets to answer. A slow answer is still an answer: under load a
PostgreSQL checkout with its ping took over a second (docs/queue.md), and a probe that calls a
slow but working database down takes a busy process out of its load balancer. The load
balancer's own probe timeout decides how long it waits for `/readyz` itself."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Each dependency with its own status (``ok`` or ``error``, with why); 503 when any is
    not ok, so a load balancer sends nothing to a process that could not answer it."""
    checks = {
        "database": await _database(runtime),
        "queue": await _queue(runtime),
        "upstream": _upstream(runtime),
        "channels": await _channels(runtime),
    }
    ready = all(check["status"] == readiness.OK for check in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


Check = dict[str, Any]


def _status(problem: str | None, **details: Any) -> Check:
    if problem is None:
        return {"status": readiness.OK, **details}
    return {"status": "error", "error": problem, **details}


async def _database(runtime: RuntimeDep) -> Check:
    try:
        engine = runtime.probe_engine or runtime.engine
        async with asyncio.timeout(CHECK_TIMEOUT), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return _status(type(exc).__name__)
    return _status(None)


async def _queue(runtime: RuntimeDep) -> Check:
    backend = runtime.settings.queue_backend
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            ok = await runtime.queue.ping()
    except Exception as exc:
        return _status(type(exc).__name__, backend=backend)
    return _status(None if ok else "no answer", backend=backend)


def _upstream(runtime: RuntimeDep) -> Check:
    """Configured, not called: a probe every few seconds must not cost upstream requests."""
    return _status(readiness.upstream_problem(runtime.settings))


async def _channels(runtime: RuntimeDep) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            directory = await runtime.accounts.snapshot()
    except Exception as exc:
        return _status(f"accounts unreadable: {type(exc).__name__}")
    states = readiness.channel_states(runtime.settings, directory)
    return _status(readiness.channel_problem(states), channels=states)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
