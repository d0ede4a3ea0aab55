"""The Redis queue among several workers and through Redis's own failures: exclusive holds
across processes, takeover from a crashed worker, and a Redis that is flushed or restarted."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from parley.queue import keys
from parley.queue.redis import RedisQueue, create_client
from tests.queue.conftest import CLAIM_IDLE_MS, LEASE_MS, RedisQueues
from tests.servers import RedisServer


async def claim_within(queue: RedisQueue, seconds: float) -> int | None:
    """Claim as a worker's loop does (short claims, again and again) for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conversation_id = await queue.claim(timeout=0.1)
        if conversation_id is not None:
            return conversation_id
    return None


async def crash(queue: RedisQueue) -> None:
    """The worker dies holding what it holds: no more heartbeats, no release."""
    assert queue._heartbeat is not None
    await queue._stop_heartbeat()
    queue._held.clear()


async def flush(url: str) -> None:
    """Redis loses its data: this database's only, as the suite's other processes use others."""
    client = create_client(url)
    await client.flushdb()
    await client.aclose()


async def test_two_workers_never_hold_one_conversation(redis_queues: RedisQueues) -> None:
    first, second = redis_queues(), redis_queues()
    await first.signal(5)
    assert await first.claim(timeout=0.5) == 5
    await second.signal(5)  # more work arrives while the first runs the turn
    assert await second.claim(timeout=0.2) is None
    await first.release(5)
    assert await second.claim(timeout=0.5) == 5
    assert await first.claim(timeout=0.1) is None
    await second.release(5)
    assert await first.claim(timeout=0.1) is None


async def test_a_running_turn_keeps_its_hold_for_many_lease_periods(
    redis_queues: RedisQueues,
) -> None:
    holder, other = redis_queues(), redis_queues()
    await holder.signal(8)
    assert await holder.claim(timeout=0.5) == 8
    ends = time.monotonic() + 4 * max(LEASE_MS, CLAIM_IDLE_MS) / 1000
    while time.monotonic() < ends:  # neither a new signal nor a takeover scan gets it
        await other.signal(8)
        assert await other.claim(timeout=0.1) is None
    await holder.release(8)
    assert await claim_within(other, 1) == 8


async def test_a_crashed_workers_conversation_is_taken_over(redis_queues: RedisQueues) -> None:
    crashed, survivor = redis_queues(), redis_queues()
    await crashed.signal(9)
    assert await crashed.claim(timeout=0.5) == 9
    await crash(crashed)
    started = time.monotonic()
    assert await survivor.claim(timeout=0.1) is None  # the lease still holds
    assert await claim_within(survivor, 5) == 9
    # When both the lease and the idle time ran out, plus a scan period (and CI slack).
    assert time.monotonic() - started < max(LEASE_MS, CLAIM_IDLE_MS) / 1000 + 0.5
    await survivor.release(9)
    assert await survivor.claim(timeout=0.1) is None


async def test_work_signalled_to_a_crashed_holder_is_not_lost(redis_queues: RedisQueues) -> None:
    crashed, survivor = redis_queues(), redis_queues()
    await crashed.signal(10)
    assert await crashed.claim(timeout=0.5) == 10
    await survivor.signal(10)  # arrives during the turn the crashed worker never finishes
    await crash(crashed)
    assert await claim_within(survivor, 5) == 10
    await survivor.release(10)  # the "again" flag set for the dead holder is honoured
    assert await claim_within(survivor, 1) == 10
    await survivor.release(10)
    assert await survivor.claim(timeout=0.1) is None


async def test_redis_losing_its_data_between_signal_and_claim(
    redis_url: str, redis_queue: RedisQueue
) -> None:
    assert await redis_queue.claim(timeout=0.05) is None  # the group exists now
    await redis_queue.signal(11)
    await flush(redis_url)
    assert await redis_queue.claim(timeout=0.2) is None  # lost; the reconciler re-signals
    await redis_queue.signal(11)
    assert await claim_within(redis_queue, 1) == 11
    await redis_queue.release(11)


async def test_redis_losing_its_data_while_a_claim_blocks(
    redis_url: str, redis_queue: RedisQueue
) -> None:
    waiter = asyncio.create_task(redis_queue.claim(timeout=0.8))
    await asyncio.sleep(0.2)
    await flush(redis_url)
    assert await waiter is None
    await redis_queue.signal(12)
    assert await claim_within(redis_queue, 1) == 12


async def test_redis_losing_its_data_while_a_conversation_is_held(
    redis_url: str, redis_queues: RedisQueues
) -> None:
    holder, other = redis_queues(), redis_queues()
    await holder.signal(13)
    assert await holder.claim(timeout=0.5) == 13
    await flush(redis_url)
    await asyncio.sleep(LEASE_MS / 1000)  # a heartbeat finds the lease gone and takes it back
    await other.signal(13)
    assert await claim_within(other, 0.5) is None
    await holder.release(13)  # nothing left to acknowledge: no error
    assert await claim_within(other, 1) == 13


async def test_redis_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # its own server, to stop and start; .ci/run installs it
    server.start()
    queue = RedisQueue.from_url(server.url, consumer="restarts", lease_ms=LEASE_MS)
    try:
        await queue.signal(14)
        assert await queue.claim(timeout=0.5) == 14
        await asyncio.to_thread(server.stop)
        assert await queue.ping() is False
        assert await queue.claim(timeout=0.1) is None
        await queue.release(14)  # logged, not raised: the worker must free its slot
        await asyncio.to_thread(server.start)
        assert await queue.ping() is True
        await queue.signal(15)
        assert await claim_within(queue, 2) == 15
        await queue.release(15)
    finally:
        await queue.close()
        await asyncio.to_thread(server.stop)


async def test_oldest_wait_is_the_age_of_the_oldest_unclaimed_signal(
    redis_queue: RedisQueue,
) -> None:
    assert await redis_queue.oldest_wait_seconds() is None
    await redis_queue.signal(16)
    await asyncio.sleep(0.2)
    await redis_queue.signal(17)
    oldest = await redis_queue.oldest_wait_seconds()
    assert oldest is not None
    assert 0.15 <= oldest < 5
    assert await redis_queue.claim(timeout=0.5) == 16
    newest = await redis_queue.oldest_wait_seconds()
    assert newest is not None
    assert newest < oldest
    assert await redis_queue.claim(timeout=0.5) == 17
    assert await redis_queue.oldest_wait_seconds() is None


async def test_every_key_is_namespaced_and_tagged_by_conversation(
    redis_url: str, redis_queue: RedisQueue
) -> None:
    await redis_queue.signal_many([21, 22])
    assert await redis_queue.claim(timeout=0.5) == 21
    await redis_queue.signal(21)
    client = create_client(redis_url)
    found = sorted(str(key) for key in await client.keys("*"))
    await client.aclose()
    assert found == sorted([keys.STREAM, keys.lease(21), keys.again(21), keys.queued(22)])
    assert all(key.startswith("parley:") for key in found)
    assert keys.lease(21).split("}")[0] == keys.again(21).split("}")[0] == "parley:{conv:21"


async def test_many_conversations_many_workers(redis_queues: RedisQueues) -> None:
    conversations = list(range(1000, 1200))
    workers = [redis_queues() for _ in range(4)]
    holders: dict[int, str] = {}
    claimed: set[int] = set()
    signalling_done = asyncio.Event()

    async def signaller(queue: RedisQueue) -> None:
        order = random.sample(conversations, len(conversations))
        for start in range(0, len(order), 10):
            chunk = order[start : start + 10]
            if start % 20:
                await queue.signal_many(chunk)
            else:
                for conversation_id in chunk:
                    await queue.signal(conversation_id)
            await asyncio.sleep(0)

    async def claimer(queue: RedisQueue) -> None:
        while not (signalling_done.is_set() and claimed == set(conversations)):
            conversation_id = await queue.claim(timeout=0.1)
            if conversation_id is None:
                continue
            assert conversation_id not in holders, f"{conversation_id} held twice"
            holders[conversation_id] = queue.consumer
            claimed.add(conversation_id)
            await asyncio.sleep(random.uniform(0, 0.003))
            del holders[conversation_id]
            await queue.release(conversation_id)

    async def run() -> None:
        claimers = [asyncio.create_task(claimer(q)) for q in workers]
        await asyncio.gather(*(signaller(q) for q in workers))
        signalling_done.set()
        await asyncio.gather(*claimers)

    await asyncio.wait_for(run(), timeout=20)
    assert claimed == set(conversations)
    # Duplicates that slipped past the markers only make a worker find nothing to do.
    while (left := await claim_within(workers[0], 0.3)) is not None:
        await workers[0].release(left)
    assert await workers[0].depth() == 0
