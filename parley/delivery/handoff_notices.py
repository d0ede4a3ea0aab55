"""Handoff notices: a signed JSON POST to PARLEY_HANDOFF_WEBHOOK_URL each time a conversation
goes to a person, so that somebody is told.

The notice row is written in the transaction that changes the conversation's mode (see
`store.queries.handoff`); this loop, in every process that runs the worker, claims due rows
(several notifiers never take the same row), posts them through the process's shared httpx
client with a timeout, and records the outcome: sent, or retried with doubling backoff until
PARLEY_HANDOFF_WEBHOOK_ATTEMPTS, then kept as failed. A turn never waits for it.

The body is signed like Meta signs its webhooks: ``X-Parley-Signature-256: sha256=<hex>``, the
HMAC-SHA256 of the raw body keyed by PARLEY_HANDOFF_WEBHOOK_SECRET (else PARLEY_SECRET_KEY);
``X-Parley-Timestamp`` repeats the body's `timestamp` so a receiver can refuse old replays.
The key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.poll_loop import PollLoop
from parley.store.models import utcnow
from parley.store.queries.handoff import (
    NoticeWork,
    claim_notices,
    mark_notice_retry,
    mark_notice_sent,
)
from parley.store.queries.turns import conversation_parties

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Parley-Signature-256"
TIMESTAMP_HEADER = "X-Parley-Timestamp"
EVENT = "conversation.handoff"
TIMEOUT_S = 10.0
"""One POST's timeout; the claim's hold is longer, so no two notifiers post one notice."""
MAX_BACKOFF_S = 300.0
POLL_S = 1.0
BATCH = 16


@dataclass(frozen=True, slots=True)
class NoticeConfig:
    url: str
    secret: bytes | None
    """The signing key; None sends notices unsigned (no key is configured)."""
    max_attempts: int


def sign(body: bytes, secret: bytes) -> str:
    """The header value a receiver recomputes: ``sha256=`` and the body's HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class HandoffNotifier:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        config: NoticeConfig,
    ) -> None:
        self._sessions = sessions
        self._http = http
        self._config = config
        self._loop = PollLoop(self._send_all, failed="handoff_notice.loop_failed", retry=POLL_S)

    def wake(self) -> None:
        self._loop.wake()

    async def run(self) -> None:
        await self._loop.run()

    async def _send_all(self) -> float:
        while await self.send_due():
            pass
        return POLL_S

    async def send_due(self) -> int:
        """Post the notices due now; returns how many were claimed."""
        async with self._sessions() as session:
            claimed = await claim_notices(
                session, limit=BATCH, hold=timedelta(seconds=TIMEOUT_S * 2)
            )
            await session.commit()
        for notice in claimed:
            await self._send(notice)
        return len(claimed)

    async def _send(self, notice: NoticeWork) -> None:
        with structlog.contextvars.bound_contextvars(
            conversation_id=notice.conversation_id, notice_id=notice.id
        ):
            timestamp = int(utcnow().timestamp())
            body = await self._body(notice, timestamp=timestamp)
            if body is None:  # the conversation was erased meanwhile: nothing to tell
                await self._record(notice, error="conversation gone", give_up=True)
                return
            error = await self._post(body, timestamp)
            if error is None:
                async with self._sessions() as session:
                    await mark_notice_sent(session, notice_id=notice.id)
                    await session.commit()
                log.info("handoff_notice.sent", attempts=notice.attempts + 1)
                return
            give_up = notice.attempts + 1 >= self._config.max_attempts
            await self._record(notice, error=error, give_up=give_up)

    async def _body(self, notice: NoticeWork, *, timestamp: int) -> bytes | None:
        """The notice's JSON, stamped with this try's time (what `X-Parley-Timestamp` repeats,
        so a receiver may refuse a replay of an old body); None if the conversation is gone."""
        async with self._sessions() as session:
            parties = await conversation_parties(session, conversation_id=notice.conversation_id)
        if parties is None:
            return None
        conversation, account, contact = parties
        payload: dict[str, Any] = {
            "event": EVENT,
            "id": notice.id,
            "timestamp": timestamp,
            "created_at": notice.created_at.isoformat(),
            "conversation_id": conversation.id,
            "channel": conversation.channel,
            "account": {
                "id": account.id,
                "external_id": account.external_id,
                "name": account.name,
            },
            "contact": {
                "id": contact.id,
                "external_id": contact.external_id,
                "name": contact.name,
                "phone": contact.phone,
                "username": contact.username,
            },
            "assignee": notice.assignee,
            "reason": notice.reason,
            "link": f"/admin/conversations/{conversation.id}",
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _post(self, body: bytes, timestamp: int) -> str | None:
        """One POST; None when the receiver took it (2xx), else why not."""
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp)}
        if self._config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._config.secret)
        try:
            response = await self._http.post(
                self._config.url, content=body, headers=headers, timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"

    async def _record(self, notice: NoticeWork, *, error: str, give_up: bool) -> None:
        attempts = notice.attempts + 1
        at = None if give_up else utcnow() + timedelta(seconds=_backoff(attempts))
        async with self._sessions() as session:
            await mark_notice_retry(session, notice_id=notice.id, at=at, error=error)
            await session.commit()
        if give_up:
            log.error("handoff_notice.failed", reason=error, attempts=attempts)
        else:
            log.warning("handoff_notice.retry", reason=error, attempts=attempts)


def _backoff(attempts: int) -> float:
    base = min(float(2 ** (attempts - 1)), MAX_BACKOFF_S)
    return base * (0.75 + random.random() * 0.25)
