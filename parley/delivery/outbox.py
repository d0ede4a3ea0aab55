"""Delivery drains the outbox: the head of each conversation is sent, then the next, so the
customer reads the parts of an answer in order; conversations are sent in parallel.

A reply is sent once: the outbox row is deleted in the transaction that records the send. The
only window for a double send is the HTTP call itself (the channel accepted the message but
the answer was lost, or the process died before that commit); see docs/queue.md. To keep it
there, on PostgreSQL each send takes its database connection before the call, and after the
channel's answer only the record's one statement is awaited.
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

from parley.channels.base import SendResult
from parley.delivery.alarms import TokenAlarm
from parley.delivery.gateway import ChannelGateway
from parley.delivery.pacing import MemoryPacer, Pacer
from parley.delivery.window import may_send
from parley.errors import ChannelSendError, FailureKind
from parley.observability import tracing
from parley.observability.metrics import DEAD_LETTERS, SENDS
from parley.poll_loop import PollLoop
from parley.store.direct import DirectWrites, Reads
from parley.store.models import utcnow
from parley.store.queries.outbox import (
    Delivery,
    claim_head,
    claim_head_directly,
    due_heads,
    mark_failed,
    mark_sent,
    mark_sent_steps,
    requeue_reported,
    schedule_retry,
)

log = structlog.get_logger(__name__)

MAX_BACKOFF = 300.0
PAIR_RATE_BASE = 4.0
"""Seconds, to the power of the attempt: the wait after one customer got too many messages."""
THROTTLE_PAUSE = 1.0
"""Seconds an account sends nothing after the channel said it sends too fast (no Retry-After)."""
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
        pacer: Pacer | None = None,
        records: async_sessionmaker[AsyncSession] | None = None,
        direct: DirectWrites | None = None,
    ) -> None:
        """`records`: sessions in autocommit mode (`create_send_record_engine`) from which
        each send takes its connection before the call; None: sends are recorded through
        `sessions` after the call (SQLite, whose one connection is never held meanwhile),
        or, with `direct`, sent in one trip on SQLite's line without a session. With `direct`,
        claims and the reads of due heads go without a session too (on PostgreSQL as well,
        `DirectWrites.on_postgresql`)."""
        self._sessions = sessions
        self._records = records
        self._direct = direct
        self._reads = Reads(sessions, direct)
        self._gateway = gateway
        self._pacer: Pacer = pacer or MemoryPacer()
        self._tokens = TokenAlarm()
        self._max_attempts = max_attempts
        # Longer than one send can take, so a row is never sent by two senders at once; short,
        # because a crashed sender's rows wait this long before another takes them.
        self._hold = timedelta(seconds=send_timeout + 5)
        self._concurrency = concurrency
        self._active: dict[int, asyncio.Task[None]] = {}
        self._loop = PollLoop(self._start_all, failed="delivery.loop_failed", retry=IDLE_POLL)
        self._stopping = False

    def wake(self) -> None:
        self._loop.wake()

    async def run(self) -> None:
        await self._loop.run()

    async def _start_all(self) -> float:
        """Start a drain for each conversation whose head is due (as many as there is room
        for); returns how long the loop may wait before looking again."""
        free = max(self._concurrency - len(self._active), 0)
        due = await due_heads(self._reads, limit=free, exclude=set(self._active))
        for conversation_id in due.conversations:
            task = asyncio.create_task(self._drain(conversation_id))
            self._active[conversation_id] = task
            task.add_done_callback(functools.partial(self._finished, conversation_id))
        if due.next_at is None:
            return IDLE_POLL
        return min(max((due.next_at - utcnow()).total_seconds(), 0.01), IDLE_POLL)

    def _finished(self, conversation_id: int, _task: asyncio.Task[None]) -> None:
        self._active.pop(conversation_id, None)
        self._loop.wake()

    async def _drain(self, conversation_id: int) -> None:
        """Send the conversation's outbox in order until it is empty or its head must wait."""
        try:
            while not self._stopping:
                delivery = await self._claim(conversation_id)
                if delivery is None or not await self._send(delivery) or not delivery.more:
                    return
        except Exception:
            # The rows stay in the outbox; the loop comes back to them once their hold ends.
            log.exception("delivery.drain_failed", conversation_id=conversation_id)

    async def _claim(self, conversation_id: int) -> Delivery | None:
        """The conversation's outbox head, held for this sender (`claim_head`): on SQLite
        committed without a session (`claim_head_directly`)."""
        if self._direct is not None and self._direct.ready:
            return await claim_head_directly(
                self._direct, conversation_id=conversation_id, hold=self._hold
            )
        async with self._sessions() as session:
            delivery = await claim_head(
                session, conversation_id=conversation_id, hold=self._hold, commits=True
            )
            await session.commit()
        return delivery

    async def _send(self, delivery: Delivery) -> bool:
        """One send and its record; returns whether the conversation may go on to the next."""
        message = delivery.message
        channel = delivery.account.channel
        correlation_id = message.meta.get("correlation_id")
        with (
            structlog.contextvars.bound_contextvars(
                conversation_id=message.conversation_id,
                message_id=message.id,
                channel=channel,
                correlation_id=correlation_id,
            ),
            tracing.span_after("parley.send", [correlation_id], channel=channel),
        ):
            if delivery.reported_failed:
                return await self._review(delivery)
            permission = may_send(
                window=self._gateway.reply_window(delivery.account),
                sender=message.sender,
                last_customer_at=delivery.last_customer_at,
                now=utcnow(),
            )
            if not permission.allowed:
                return await self._refuse(delivery, permission.reason or "not sent")
            try:
                sent = await self._send_and_record(delivery, permission.tag)
            except ChannelSendError as exc:
                return await self._failed(delivery, exc)
            if sent is None:  # its send slot is too far off: back to the outbox until then
                return False
            result, seconds = sent
            self._tokens.worked(account_id=delivery.account.id)
            SENDS.labels(channel, "sent", "").inc()
            log.info(
                "delivery.sent",
                account_id=delivery.account.id,
                channel_message_id=result.channel_message_id,
                attempt=delivery.attempts + 1,
                latency_ms=round(seconds * 1000),
            )
            return True

    async def _pace(self, delivery: Delivery) -> bool:
        """Wait for the account's next send slot; False when it is too far off, the row then
        going back to the outbox until it (no attempt counted)."""
        rate = self._gateway.send_rate(delivery.account)
        if rate is None:
            return True
        slot = await self._pacer.reserve(str(delivery.account.id), rate)
        if slot.granted:
            if slot.wait > 0:
                await asyncio.sleep(slot.wait)  # at most pacing.MAX_WAIT_S
            return True
        async with self._sessions() as session:
            await schedule_retry(
                session,
                outbox_id=delivery.outbox_id,
                at=utcnow() + timedelta(seconds=slot.wait),
                error=None,
                count=False,
            )
            await session.commit()
        return False

    async def _send_and_record(
        self, delivery: Delivery, tag: str | None
    ) -> tuple[SendResult, float] | None:
        """At the account's send slot, send, and record the send as soon as the channel
        accepted it: a crash in between sends the reply twice (the row stays in the outbox),
        so nothing else is awaited there. Returns the channel's answer and the seconds the
        call took; None when the slot is too far off (`_pace`).

        With `records`, the connection is taken (and checked, if it rested) before the slot,
        so the record waits for no pool, is one statement in autocommit mode, and the time a
        new connection takes to open does not fall between the slot and the call (it made
        sends go out closer together than the account's rate). A store that failed meanwhile
        falls back to `_record_sent`'s retries. Without a connection, nothing is sent: the row
        waits out its hold and is tried again.
        """
        session = self._records() if self._records is not None else None
        try:
            if session is not None:
                await session.connection()
            if not await self._pace(delivery):
                return None
            started = time.perf_counter()
            result = await self._call(delivery, tag)
            seconds = time.perf_counter() - started
            recorded = session is not None and await self._record_on(
                session, delivery, result.channel_message_id
            )
        finally:
            if session is not None:
                # A connection that broke is only thrown away; the record's fate is decided
                # above.
                with contextlib.suppress(DBAPIError, OSError):
                    await session.close()
        if not recorded:
            await self._record_sent(delivery, result.channel_message_id)
        return result, seconds

    async def _call(self, delivery: Delivery, tag: str | None) -> SendResult:
        return await self._gateway.send_text(
            account=delivery.account,
            contact=delivery.contact,
            text=delivery.message.text or "",
            reply_to=delivery.reply_to_channel_id,
            tag=tag,
        )

    async def _record_on(
        self, session: AsyncSession, delivery: Delivery, channel_message_id: str | None
    ) -> bool:
        """Record the send on the connection taken before the call; False if the store failed."""
        try:
            await _commit_sent(session, delivery, channel_message_id)
        except (DBAPIError, OSError) as exc:
            log.warning("delivery.record_retry", error=type(exc).__name__)
            return False
        return True

    async def _record_sent(self, delivery: Delivery, channel_message_id: str | None) -> None:
        """Record a send the channel accepted. The store may be briefly down (a failover, a
        restart): keep trying while the row is still held, because once the hold runs out
        another sender would send the message again."""
        give_up = time.monotonic() + self._hold.total_seconds() - 1
        sessions = self._records or self._sessions
        while True:
            try:
                if self._records is None and self._direct is not None and self._direct.ready:
                    await self._direct.commit(
                        mark_sent_steps(
                            self._direct,
                            outbox_id=delivery.outbox_id,
                            message_id=delivery.message.id,
                            channel_message_id=channel_message_id,
                        )
                    )
                    return
                async with sessions() as session:
                    await _commit_sent(session, delivery, channel_message_id)
                return
            except (DBAPIError, OSError, PoolTimeout) as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("delivery.record_retry", error=type(exc).__name__)
                await asyncio.sleep(RECORD_RETRY)

    async def _failed(self, delivery: Delivery, exc: ChannelSendError) -> bool:
        """What a failed send leads to, by its kind: a retry after backoff, a hold while the
        account's token is refused, or `failed` with the reason."""
        attempts = delivery.attempts + 1
        if exc.kind == FailureKind.TOKEN:
            return await self._hold_for_token(delivery, exc, attempts)
        if exc.kind == FailureKind.THROTTLED:
            # The whole account sends too fast: every conversation of it waits, not only this.
            await self._pacer.pause(str(delivery.account.id), exc.retry_after or THROTTLE_PAUSE)
        if exc.retryable and attempts < self._max_attempts:
            await self._retry(delivery, exc, attempts)
            return False
        await self._give_up(delivery, str(exc), attempts, code=exc.code)
        return True

    async def _retry(self, delivery: Delivery, exc: ChannelSendError, attempts: int) -> None:
        delay = _backoff(attempts, exc.retry_after)
        if exc.kind == FailureKind.RECIPIENT_THROTTLED and exc.retry_after is None:
            # Meta's advice for its pair rate: 4^n seconds. Only this conversation waits.
            delay = min(PAIR_RATE_BASE**attempts, MAX_BACKOFF)
        async with self._sessions() as session:
            await schedule_retry(
                session,
                outbox_id=delivery.outbox_id,
                at=utcnow() + timedelta(seconds=delay),
                error=str(exc),
            )
            await session.commit()
        SENDS.labels(delivery.account.channel, "retry", _code(exc.code)).inc()
        log.warning(
            "delivery.retry", reason=str(exc), code=exc.code, attempts=attempts, delay_s=delay
        )

    async def _hold_for_token(
        self, delivery: Delivery, exc: ChannelSendError, attempts: int
    ) -> bool:
        """Nothing of the account goes out until its token is replaced, so the reply waits
        (retried with backoff, without an end of its own: the reply window ends it) instead of
        failing for a fault that is the business's to fix. Logged once per account."""
        account = delivery.account
        self._tokens.failed(
            account_id=account.id,
            channel=account.channel,
            external_id=account.external_id,
            reason=str(exc),
        )
        delay = _backoff(attempts, None)
        async with self._sessions() as session:
            await schedule_retry(
                session,
                outbox_id=delivery.outbox_id,
                at=utcnow() + timedelta(seconds=delay),
                error=f"{exc} (held until the token is replaced)",
            )
            await session.commit()
        SENDS.labels(account.channel, "held", _code(exc.code)).inc()
        log.debug("delivery.held_for_token", attempts=attempts, delay_s=delay)
        return False

    async def _review(self, delivery: Delivery) -> bool:
        """The channel reported a sent message failed: send it again if its code is retryable
        and attempts remain, else leave it failed with the reason. Only this one report leads
        to this one new send; the report's message id no longer names the message after it."""
        failures = delivery.message.meta.get("reported_failures") or [{}]
        exc = self._gateway.classify_status(delivery.account, failures[-1].get("errors") or [])
        attempts = delivery.attempts + 1
        if not (exc.retryable and attempts < self._max_attempts):
            await self._give_up(delivery, f"reported failed: {exc}", attempts, code=exc.code)
            return True
        if exc.kind == FailureKind.THROTTLED:
            await self._pacer.pause(str(delivery.account.id), THROTTLE_PAUSE)
        delay = _backoff(attempts, None)
        if exc.kind == FailureKind.RECIPIENT_THROTTLED:
            delay = min(PAIR_RATE_BASE**attempts, MAX_BACKOFF)
        async with self._sessions() as session:
            await requeue_reported(
                session,
                outbox_id=delivery.outbox_id,
                message_id=delivery.message.id,
                at=utcnow() + timedelta(seconds=delay),
                error=f"reported failed, sending again: {exc}",
            )
            await session.commit()
        SENDS.labels(delivery.account.channel, "retry", _code(exc.code)).inc()
        log.warning("delivery.resend_reported", reason=str(exc), attempts=attempts, delay_s=delay)
        return False

    async def _refuse(self, delivery: Delivery, reason: str) -> bool:
        """Not tried at all (outside the reply window): failed with the reason, and the
        conversation goes on to the next, which is refused likewise."""
        await self._give_up(delivery, reason, delivery.attempts, event="delivery.not_sent")
        return True

    async def _give_up(
        self,
        delivery: Delivery,
        reason: str,
        attempts: int,
        event: str = "delivery.failed",
        code: str | None = None,
    ) -> None:
        async with self._sessions() as session:
            await mark_failed(
                session,
                outbox_id=delivery.outbox_id,
                message_id=delivery.message.id,
                error=reason,
            )
            await session.commit()
        outcome = "failed" if event == "delivery.failed" else "not_sent"
        SENDS.labels(delivery.account.channel, outcome, _code(code)).inc()
        DEAD_LETTERS.labels("send").inc()
        log.error(event, reason=reason, code=code, attempts=attempts)

    async def close(self) -> None:
        await self._pacer.close()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._loop.stop()
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _commit_sent(
    session: AsyncSession, delivery: Delivery, channel_message_id: str | None
) -> None:
    await mark_sent(
        session,
        outbox_id=delivery.outbox_id,
        message_id=delivery.message.id,
        channel_message_id=channel_message_id,
        commits=True,
    )
    await session.commit()


def _code(code: str | None) -> str:
    """A channel's error code as a label: Graph codes are a short list of numbers; anything
    else (a free-form text, an unknown scheme) is not let in, so the labels stay bounded."""
    if code is None:
        return ""
    return code if code.isdigit() and len(code) <= 8 else "other"


def _backoff(attempts: int, retry_after: float | None) -> float:
    """Exponential with jitter, as the openai SDK does; the upstream's Retry-After wins."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF)
    base = min(0.5 * 2 ** (attempts - 1), 60.0)
    return base * (0.75 + random.random() * 0.25)
