"""Delivery drains the outbox: the head of each conversation is sent, then the next, so the
customer reads the parts of an answer in order; conversations are sent in parallel.

A reply is sent once: the outbox row is deleted in the transaction that records the send. The
only window for a double send is the HTTP call itself (the channel accepted the message but
the answer was lost, or the process died before that commit); see docs/.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from datetime import timedelta

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.delivery.gateway import ChannelGateway
from parley.errors import ChannelSendError
from parley.observability.metrics import SENDS
from parley.store.models import utcnow
from parley.store.queries.outbox import (
    Delivery,
    claim_head,
    conversations_with_due_heads,
    mark_failed,
    mark_sent,
    next_due_at,
    schedule_retry,
)

log = structlog.get_logger(__name__)

MAX_BACKOFF = 300.0
RECORD_RETRY = 0.5
IDLE_POLL = 1.0
"""The longest delivery sleeps without a wake-up: another process may have written the outbox."""


class Deliverer:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        gateway: ChannelGateway,
        max_attempts: int,
        send_timeout: float,
        concurrency: int = 16,
    ) -> None:
        self._sessions = sessions
        self._gateway = gateway
        self._max_attempts = max_attempts
        # Longer than one send can take, so a row is never sent by two senders at once; short,
        # because a crashed sender's rows wait this long before another takes them.
        self._hold = timedelta(seconds=send_timeout + 5)
        self._concurrency = concurrency
        self._active: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._start_due()
                pause = await self._pause()
            except Exception:
                log.exception("delivery.loop_failed")
                pause = IDLE_POLL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    async def _start_due(self) -> None:
        free = self._concurrency - len(self._active)
        if free <= 0:
            return
        async with self._sessions() as session:
            due = await conversations_with_due_heads(session, limit=free, exclude=set(self._active))
        for conversation_id in due:
            task = asyncio.create_task(self._drain(conversation_id))
            self._active[conversation_id] = task
            task.add_done_callback(functools.partial(self._finished, conversation_id))

    def _finished(self, conversation_id: int, _task: asyncio.Task[None]) -> None:
        self._active.pop(conversation_id, None)
        self._wake.set()

    async def _pause(self) -> float:
        async with self._sessions() as session:
            due = await next_due_at(session)
        if due is None:
            return IDLE_POLL
        return min(max((due - utcnow()).total_seconds(), 0.01), IDLE_POLL)

    async def _drain(self, conversation_id: int) -> None:
        """Send the conversation's outbox in order until it is empty or its head must wait."""
        try:
            while not self._stopping:
                async with self._sessions() as session:
                    delivery = await claim_head(
                        session, conversation_id=conversation_id, hold=self._hold
                    )
                    await session.commit()
                if delivery is None or not await self._send(delivery):
                    return
        except Exception:
            # The rows stay in the outbox; the loop comes back to them once their hold ends.
            log.exception("delivery.drain_failed", conversation_id=conversation_id)

    async def _send(self, delivery: Delivery) -> bool:
        """One send and its record; returns whether the conversation may go on to the next."""
        message = delivery.message
        channel = delivery.account.channel
        with structlog.contextvars.bound_contextvars(
            conversation_id=message.conversation_id,
            message_id=message.id,
            channel=channel,
            correlation_id=message.meta.get("correlation_id"),
        ):
            try:
                result = await self._gateway.send_text(
                    account=delivery.account,
                    contact=delivery.contact,
                    text=message.text or "",
                    reply_to=delivery.reply_to_channel_id,
                )
            except ChannelSendError as exc:
                return await self._failed(delivery, exc)
            await self._record_sent(delivery, result.channel_message_id)
            SENDS.labels(channel, "sent").inc()
            log.info("delivery.sent", channel_message_id=result.channel_message_id)
            return True

    async def _record_sent(self, delivery: Delivery, channel_message_id: str | None) -> None:
        """Record a send the channel accepted. The store may be briefly down (a failover, a
        restart): keep trying while the row is still held, because once the hold runs out
        another sender would send the message again."""
        give_up = time.monotonic() + self._hold.total_seconds() - 1
        while True:
            try:
                async with self._sessions() as session:
                    await mark_sent(
                        session,
                        outbox_id=delivery.outbox_id,
                        message_id=delivery.message.id,
                        channel_message_id=channel_message_id,
                    )
                    await session.commit()
                return
            except (DBAPIError, OSError, PoolTimeout) as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("delivery.record_retry", error=type(exc).__name__)
                await asyncio.sleep(RECORD_RETRY)

    async def _failed(self, delivery: Delivery, exc: ChannelSendError) -> bool:
        attempts = delivery.attempts + 1
        channel = delivery.account.channel
        async with self._sessions() as session:
            if exc.retryable and attempts < self._max_attempts:
                delay = _backoff(attempts, exc.retry_after)
                await schedule_retry(
                    session,
                    outbox_id=delivery.outbox_id,
                    at=utcnow() + timedelta(seconds=delay),
                    error=str(exc),
                )
                SENDS.labels(channel, "retry").inc()
                log.warning("delivery.retry", reason=str(exc), attempts=attempts, delay_s=delay)
            else:
                await mark_failed(
                    session,
                    outbox_id=delivery.outbox_id,
                    message_id=delivery.message.id,
                    error=str(exc),
                )
                SENDS.labels(channel, "failed").inc()
                log.error("delivery.failed", reason=str(exc), attempts=attempts)
            await session.commit()
        # A failed part is dropped and the next goes out; one in backoff holds the rest back.
        return not exc.retryable or attempts >= self._max_attempts

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _backoff(attempts: int, retry_after: float | None) -> float:
    """Exponential with jitter, as the openai SDK does; the upstream's Retry-After wins."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF)
    base = min(0.5 * 2 ** (attempts - 1), 60.0)
    return base * (0.75 + random.random() * 0.25)
