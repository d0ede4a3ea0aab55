"""The Redis queue of `parley api` + `parley worker` on many machines.

The queue carries signals, never work (DESIGN principle 1): the database says what waits, so Redis
may restart or lose all its data and the reconciler repairs it. What Redis must get right is the
*hold*: one worker per conversation at a time, so that its turns stay in order (principle 3).

How it works, and why:

- **Signals are stream entries.** `signal` adds `{c: <id>}` to one stream (`XADD … MAXLEN ~`, a
  cap that only protects memory; acknowledged entries are deleted at once, so the stream holds
  only what waits or runs). Workers read it through one consumer group (`XREADGROUP … BLOCK`,
  one entry at a time, never blocking longer than the claim's timeout or 1 s). A stream, unlike
  a list, remembers which worker got which entry until it is acknowledged: that is what lets
  another worker take over from one that crashed.
- **A conversation is held by a lease**, `SET {conv:<id>}:lease <consumer> NX PX lease_ms`. A
  heartbeat task renews every lease it holds every `lease_ms / 3`, with a check-and-set script
  (only while the value is still ours; a lease found gone, e.g. after a Redis flush, is taken
  back if no one else took it). `release` deletes it with compare-and-delete. The lease, not the
  stream, is what makes a conversation exclusive; the database guard in
  `store.queries.turns._check_answered` is the last line if a lease is ever lost mid-turn.
- **A signal for a held conversation sets `{conv:<id>}:again`** instead of adding an entry, and
  an entry read for a held conversation is acknowledged after setting that flag; both checks run
  atomically with the lease in one script. On `release`, the holder clears the flag and signals
  again if it was set, so work that arrived during a turn gets the next turn, never a parallel one.
- **Duplicates are dropped** by a `{conv:<id>}:queued` marker (`SET NX PX dedupe_ms`), set when an
  entry is added and cleared when one is read. Its TTL bounds the harm of a marker whose entry was
  lost: signals for that conversation are dropped for at most `dedupe_ms`, then the reconciler's
  next signal goes through. A duplicate that slips by only makes a worker find nothing to do.
- **A crashed worker's conversations are taken over** with `XAUTOCLAIM` once its entry has been
  idle `claim_idle_ms`. The heartbeat renews the lease and *then* resets the idle time of the
  entries it holds (`XCLAIM … JUSTID`), so a live holder's entry never looks idle, and a dead
  holder's lease has expired by the time its entry does. A taken-over entry whose conversation
  is still leased (a crash before the first heartbeat) stays pending, never acknowledged, and is
  made due again for when that lease runs out (`XCLAIM … IDLE`). Takeover happens about
  max(lease_ms, claim_idle_ms) after the last heartbeat (at most 30 s after a crash with the
  defaults), plus at most one second for the scan.
- **Redis Cluster**: the keys of one conversation share the hash tag `{conv:<id>}` and every
  script touches only those; the stream is one key of its own; nothing spans two conversations.
  One stream is one slot: at WhatsApp's top rate (1,000 signals/s) that is far below what one
  Redis node serves; shard the stream by conversation id if that ever stops being true.
- **Failures**: every call has a socket timeout and the client retries connection errors with
  jittered backoff. `claim` never raises for Redis trouble: it logs `queue.claim_failed`, sleeps
  out its timeout and returns None; a missing group (Redis restarted or flushed) is recreated,
  `MKSTREAM` from id 0 so signals added meanwhile are kept. `release` never raises either (the
  worker must free its slot); its lease then expires and its entry is taken over. `signal`,
  `depth` and `oldest_wait_seconds` raise `redis.RedisError`: their callers log and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from parley.queue import keys
from parley.queue.redis_client import create_client, default_consumer, text, why
from parley.queue.redis_lease import Leases
from parley.queue.redis_stream import SignalStream

__all__ = ["RedisQueue", "create_client", "default_consumer"]

log = structlog.get_logger(__name__)

MAX_BLOCK_MS = 1_000
"""The longest one XREADGROUP blocks: below any sane socket timeout, and keeps takeover scans
running while a claim waits."""

SIGNAL_CHUNK = 500

SCAN_STEPS = 10
"""XAUTOCLAIM calls one claim makes at most (each looks at up to 10 pending entries)."""


class RedisQueue:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        consumer: str,
        lease_ms: int = 30_000,
        claim_idle_ms: int = 30_000,
        dedupe_ms: int = 60_000,
        maxlen: int = 1_000_000,
        owns_client: bool = False,
    ) -> None:
        if lease_ms < 30 or claim_idle_ms < 1:
            raise ValueError("lease_ms must be at least 30 and claim_idle_ms at least 1")
        self._client = client
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._owns_client = owns_client
        # Conversation id -> the stream entries acknowledged when it is released.
        self._held: dict[int, list[str]] = {}
        self._next_scan = 0.0
        self._scan_every = min(1.0, claim_idle_ms / 4000)
        self._heartbeat: asyncio.Task[None] | None = None
        self._stream = SignalStream(
            client, consumer=consumer, claim_idle_ms=claim_idle_ms, maxlen=maxlen
        )
        self._leases = Leases(client, consumer=consumer, lease_ms=lease_ms, dedupe_ms=dedupe_ms)

    @classmethod
    def from_url(cls, url: str, *, consumer: str | None = None, **options: Any) -> RedisQueue:
        """A queue with its own client, closed by `close`."""
        return cls(
            create_client(url), consumer=consumer or default_consumer(), owns_client=True, **options
        )

    @property
    def consumer(self) -> str:
        return self._consumer

    async def signal(self, conversation_id: int) -> None:
        await self.signal_many([conversation_id])

    async def signal_many(self, conversation_ids: Iterable[int]) -> None:
        unique = list(dict.fromkeys(conversation_ids))
        for start in range(0, len(unique), SIGNAL_CHUNK):
            await self._signal_chunk(unique[start : start + SIGNAL_CHUNK])

    async def _signal_chunk(self, conversation_ids: Sequence[int]) -> None:
        fresh = await self._leases.to_add(conversation_ids)
        if not fresh:
            return
        await self._stream.add(fresh)

    async def claim(self, timeout: float) -> int | None:
        self._start_heartbeat()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        try:
            await self._stream.ensure_group()
            while True:
                if loop.time() >= self._next_scan:
                    conversation_id = await self._take_over()
                    if conversation_id is not None:
                        return conversation_id
                remaining_ms = int((deadline - loop.time()) * 1000)
                entry = await self._stream.read(max(1, min(remaining_ms, MAX_BLOCK_MS)))
                if entry is not None:
                    conversation_id = await self._take(*entry, takeover=False)
                    if conversation_id is not None:
                        return conversation_id
                if loop.time() >= deadline:
                    return None
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                await self._claim_failed(exc, deadline)
                return None
            # Redis restarted or lost its data: what waited is gone, the reconciler re-signals.
            log.warning("queue.group_missing", error=str(exc))
            self._stream.group_lost()
            with contextlib.suppress(RedisError, OSError):
                await self._stream.ensure_group()
            return None
        except (RedisError, OSError) as exc:
            await self._claim_failed(exc, deadline)
            return None

    async def _claim_failed(self, exc: Exception, deadline: float) -> None:
        log.warning("queue.claim_failed", error=why(exc))
        # Sleep out the timeout, so that a worker's claim loop does not spin while Redis is down.
        await asyncio.sleep(max(0.1, min(1.0, deadline - asyncio.get_running_loop().time())))

    async def _take_over(self) -> int | None:
        """Scan the pending entries for ones idle past `claim_idle_ms`: a crashed worker's."""
        loop = asyncio.get_running_loop()
        for _ in range(SCAN_STEPS):
            claimed, scanned_all = await self._stream.idle_entries()
            for entry_id, fields in claimed:
                conversation_id = await self._take(entry_id, fields, takeover=True)
                if conversation_id is not None:
                    log.info("queue.taken_over", conversation_id=conversation_id)
                    return conversation_id
            if scanned_all:
                self._next_scan = loop.time() + self._scan_every
                return None
        return None  # a long pending list: go on from the cursor at the next claim

    async def _take(self, entry_id: str, fields: dict[Any, Any], *, takeover: bool) -> int | None:
        """Hold the entry's conversation if it is free; returns its id then."""
        try:
            conversation_id = int(text(fields.get(keys.FIELD, fields.get(keys.FIELD.encode()))))
        except ValueError:
            log.error("queue.entry_invalid", entry_id=entry_id, fields=repr(fields))
            await self._stream.ack([entry_id])
            return None
        taken, lease_left_ms = await self._leases.take(conversation_id, flag_if_held=not takeover)
        if taken:
            self._held[conversation_id] = [entry_id]
            return conversation_id
        if not takeover:
            # The holder was told by the "again" flag; this entry has done its job.
            await self._stream.ack([entry_id])
        elif lease_left_ms > 0:
            # Still leased, by a worker that may be dead: keep the entry pending, and make it
            # due for the next scan just when that lease runs out.
            await self._stream.due_in(entry_id, lease_left_ms)
        return None

    async def release(self, conversation_id: int) -> None:
        entry_ids = self._held.pop(conversation_id, None)
        if entry_ids is not None:
            await self._let_go(conversation_id, entry_ids, hand_back=False)

    async def _let_go(self, conversation_id: int, entry_ids: list[str], *, hand_back: bool) -> None:
        try:
            again = await self._leases.release(conversation_id)
            if again or hand_back:
                await self.signal(conversation_id)
            # Acknowledged last: a crash before this leaves the entry to be taken over.
            await self._stream.ack(entry_ids)
        except (RedisError, OSError) as exc:
            log.warning("queue.release_failed", conversation_id=conversation_id, error=why(exc))

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="parley-queue-heartbeat")

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        while task is not None and not task.done():
            # Repeated: on Python 3.11 a cancel that lands while redis-py is inside
            # asyncio.wait_for (it wraps every socket write in one) is swallowed (CPython
            # gh-86296, fixed in 3.12), and the heartbeat would go on beating.
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self._leases.renew(list(self._held.items()))
            except (RedisError, OSError) as exc:
                log.warning("queue.heartbeat_failed", held=len(self._held), error=why(exc))

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def depth(self) -> int:
        """Signals no worker has read yet."""
        return await self._stream.depth()

    async def oldest_wait_seconds(self) -> float | None:
        """How long the oldest signal no worker has read yet has waited (by Redis's clock):
        the number to autoscale workers on. None when nothing waits."""
        return await self._stream.oldest_wait_seconds()

    async def close(self) -> None:
        """Stop the heartbeat; conversations still held are handed back, signalled again so
        another worker takes them without waiting for the lease to expire."""
        await self._stop_heartbeat()
        for conversation_id in list(self._held):
            log.info("queue.handed_back", conversation_id=conversation_id)
            await self._let_go(conversation_id, self._held.pop(conversation_id), hand_back=True)
        if self._owns_client:
            await self._client.aclose()
