"""Liveness, readiness and metrics: what load balancers and Prometheus ask."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from parley.deps import RuntimeDep

router = APIRouter(tags=["health"])
CHECK_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = {"database": await _database(runtime), "queue": await _queue(runtime)}
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _database(runtime: RuntimeDep) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return f"error: {type(exc).__name__}"
    return "ok"


async def _queue(runtime: RuntimeDep) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            ok = await runtime.queue.ping()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok" if ok else "error: no answer"


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
