"""The queue's Redis client, its consumer name, and how Redis replies are read."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_client(url: str) -> aioredis.Redis:
    """A client for the queue: bounded timeouts, health checks, retries on connection errors."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        client_name="parley-queue",
    )


def default_consumer() -> str:
    """A consumer name unique to this process: host, pid and a random suffix (a restarted
    process must not mistake its predecessor's leases for its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
