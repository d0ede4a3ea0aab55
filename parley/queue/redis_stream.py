"""The signal stream and its consumer group: adding entries, reading them, taking over idle
ones, acknowledging, and the numbers the autoscaler reads. Nothing here knows about leases
(`redis_lease`); what an entry means for its conversation is decided in `parley.queue.redis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from parley.queue import keys
from parley.queue.redis_client import text

log = structlog.get_logger(__name__)

Entry = tuple[str, dict[Any, Any]]


class SignalStream:
    def __init__(
        self, client: aioredis.Redis, *, consumer: str, claim_idle_ms: int, maxlen: int
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._maxlen = maxlen
        self._group_ready = False
        self._cursor = "0-0"

    async def add(self, conversation_ids: Sequence[int]) -> None:
        async with self._client.pipeline(transaction=False) as adds:
            for cid in conversation_ids:
                adds.xadd(keys.STREAM, {keys.FIELD: cid}, maxlen=self._maxlen, approximate=True)
            await adds.execute()

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(keys.STREAM, keys.GROUP, id="0", mkstream=True)
            log.info("queue.group_created", stream=keys.STREAM, group=keys.GROUP)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def group_lost(self) -> None:
        self._group_ready = False

    async def read(self, block_ms: int) -> Entry | None:
        response: Any = await self._client.xreadgroup(
            keys.GROUP, self._consumer, {keys.STREAM: ">"}, count=1, block=block_ms
        )
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                return text(entry_id), fields
        return None

    async def idle_entries(self) -> tuple[list[Entry], bool]:
        """One step of the scan for pending entries idle past `claim_idle_ms` (a crashed
        worker's), claimed for this consumer; and whether the scan went round the whole list."""
        cursor, claimed, *_ = await self._client.xautoclaim(
            keys.STREAM,
            keys.GROUP,
            self._consumer,
            min_idle_time=self._claim_idle_ms,
            start_id=self._cursor,
            count=1,
        )
        self._cursor = text(cursor)
        entries = [
            (text(entry_id), fields)
            for entry_id, fields in claimed
            if fields is not None  # trimmed from the stream while pending
        ]
        return entries, self._cursor == "0-0"

    async def due_in(self, entry_id: str, ms: int) -> None:
        """Keep the entry pending, idle just enough that a scan takes it in `ms`."""
        idle = max(0, self._claim_idle_ms - ms)
        await self._client.xclaim(
            keys.STREAM, keys.GROUP, self._consumer, 0, [entry_id], idle=idle, justid=True
        )

    async def ack(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(keys.STREAM, keys.GROUP, *entry_ids)
            pipe.xdel(keys.STREAM, *entry_ids)
            await pipe.execute()

    async def depth(self) -> int:
        """Signals no worker has read yet. Acknowledged entries are deleted, so the stream holds
        what waits and what is held (pending): its length less the pending count."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.STREAM)
            pipe.xpending(keys.STREAM, keys.GROUP)
            length, pending = await pipe.execute(raise_on_error=False)
        if isinstance(length, Exception):
            raise length
        if isinstance(pending, ResponseError):  # no group yet: nothing was read
            return int(length)
        if isinstance(pending, Exception):
            raise pending
        return max(0, int(length) - int(pending["pending"]))

    async def oldest_wait_seconds(self) -> float | None:
        """The age, by Redis's clock, of the first entry past the group's last delivered one;
        None when nothing waits."""
        start = "-"
        try:
            for group in await self._client.xinfo_groups(keys.STREAM):
                if text(group["name"]) == keys.GROUP:
                    start = "(" + text(group["last-delivered-id"])
        except ResponseError:  # no stream yet
            return None
        entries = await self._client.xrange(keys.STREAM, min=start, max="+", count=1)
        if not entries:
            return None
        added_ms = int(text(entries[0][0]).split("-", 1)[0])
        seconds, microseconds = await self._client.time()
        now_ms = int(seconds) * 1000 + int(microseconds) / 1000
        return max(0.0, (now_ms - added_ms) / 1000)
