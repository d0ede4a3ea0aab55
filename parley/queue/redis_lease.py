"""A conversation's own keys: its lease, its "again" flag and its "queued" marker. Each change
that reads one of them to decide about another runs as one of the scripts in `keys`, so it is
atomic and stays within the conversation's hash tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog

from parley.queue import keys
from parley.queue.redis_client import why

log = structlog.get_logger(__name__)

AGAIN_TTL_MS = 24 * 3_600_000
"""How long an "again" flag outlives a holder that never released (it crashed)."""


class Leases:
    def __init__(
        self, client: aioredis.Redis, *, consumer: str, lease_ms: int, dedupe_ms: int
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._dedupe_ms = dedupe_ms
        self._signal_script = client.register_script(keys.SIGNAL_SCRIPT)
        self._take_script = client.register_script(keys.TAKE_SCRIPT)
        self._renew_script = client.register_script(keys.RENEW_SCRIPT)
        self._release_script = client.register_script(keys.RELEASE_SCRIPT)

    async def to_add(self, conversation_ids: Sequence[int]) -> list[int]:
        """The conversations whose signal needs a stream entry: neither held (those get the
        "again" flag) nor already queued."""
        # Pipelines as context managers: redis-py returns their connection to the pool on exit
        # even when a cancellation lands before `execute` has its own cleanup in place.
        async with self._client.pipeline(transaction=False) as checks:
            for cid in conversation_ids:
                await self._signal_script(
                    keys=[keys.lease(cid), keys.again(cid), keys.queued(cid)],
                    args=[AGAIN_TTL_MS, self._dedupe_ms],
                    client=checks,
                )
            verdicts = await checks.execute()
        return [cid for cid, add in zip(conversation_ids, verdicts, strict=True) if add == 1]

    async def take(self, conversation_id: int, *, flag_if_held: bool) -> tuple[bool, int]:
        """Whether the lease is now ours; if not, how long the holder's lease has left."""
        taken, lease_left_ms = await self._take_script(
            keys=[
                keys.lease(conversation_id),
                keys.again(conversation_id),
                keys.queued(conversation_id),
            ],
            args=[self._consumer, self._lease_ms, 1 if flag_if_held else 0, AGAIN_TTL_MS],
        )
        return taken == 1, int(lease_left_ms)

    async def release(self, conversation_id: int) -> bool:
        """Let go of the lease; True when the conversation was signalled while held."""
        again = await self._release_script(
            keys=[keys.lease(conversation_id), keys.again(conversation_id)],
            args=[self._consumer],
        )
        return bool(again)

    async def renew(self, held: list[tuple[int, list[str]]]) -> None:
        """Renew the leases of the held conversations, and reset their entries' idle time."""
        if not held:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for conversation_id, _ in held:
                await self._renew_script(
                    keys=[keys.lease(conversation_id)],
                    args=[self._consumer, self._lease_ms],
                    client=pipe,
                )
            # After the leases: an entry must never look idle while its lease is alive.
            entry_ids: list[Any] = [entry_id for _, ids in held for entry_id in ids]
            pipe.xclaim(keys.STREAM, keys.GROUP, self._consumer, 0, entry_ids, justid=True)
            results = await pipe.execute(raise_on_error=False)
        for (conversation_id, _), result in zip(held, results, strict=False):
            if result == 0:
                log.warning("queue.lease_lost", conversation_id=conversation_id)
            elif result == 2:
                log.warning("queue.lease_retaken", conversation_id=conversation_id)
            elif isinstance(result, Exception):
                log.warning(
                    "queue.heartbeat_failed", conversation_id=conversation_id, error=why(result)
                )
