"""Deleting upstream what Parley no longer keeps: OpenAI conversations and stored responses of
expired conversations and erased customers, from the durable queue `upstream_deletions`.

It runs where the worker runs (`serve`, `worker`), beside the turns and never in their way:
one delete at a time, each tried once (no SDK backoff held in a loop) and, when it fails,
tried again later with exponential backoff (or the upstream's Retry-After), for as long as it
takes. A 404 means the object is gone already, which is what was wanted; a 400 or 422 (an id
the upstream can never delete) is logged and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import LLM
from parley.errors import LLMError
from parley.poll_loop import PollLoop
from parley.store.models import utcnow
from parley.store.queries.upstream_deletions import (
    CONVERSATION,
    ClaimedDeletion,
    claim_due,
    mark_deleted,
    next_deletion_due,
    retry_later,
)

log = structlog.get_logger(__name__)

BATCH = 20
"""Rows claimed at once; each is one upstream call."""
BACKOFF_BASE = 5.0
"""Seconds before the first retry; doubled with each failed attempt."""
MAX_BACKOFF = 3600.0
REFUSED = frozenset({400, 422})
"""Statuses that say the request itself is wrong, for good: the row is dropped, logged. A 401
or 403 (a key or a project that can be fixed) is retried like an outage."""
POLL = 10.0
"""The longest the drainer sleeps: erasures through `parley api` queue rows in other
processes, which cannot wake this one."""


@dataclass
class Drained:
    deleted: int = 0
    missing: int = 0
    """Already gone upstream (404): done all the same."""
    failed: int = 0
    retry: list[tuple[int, float, str]] = field(default_factory=list)


class UpstreamDeleter:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        llm: LLM,
        call_timeout: float,
        backoff_base: float = BACKOFF_BASE,
        poll: float = POLL,
        batch: int = BATCH,
    ) -> None:
        self._sessions = sessions
        self._llm = llm
        self._backoff_base = backoff_base
        self._poll = poll
        self._batch = batch
        # Longer than the batch's calls can take, so that no other worker takes a row that is
        # being deleted; a crashed worker's rows wait this long.
        self._hold = timedelta(seconds=batch * call_timeout + 30)
        self._loop = PollLoop(self._drain_all, failed="upstream_deletion.loop_failed", retry=poll)

    def wake(self) -> None:
        """Rows were queued in this process: delete them now rather than at the next poll."""
        self._loop.wake()

    async def run(self) -> None:
        await self._loop.run()

    async def _drain_all(self) -> float:
        await self.drain()
        return await self._pause()

    async def drain(self) -> Drained:
        """Delete every row that is due now; failures are put back for later."""
        total = Drained()
        while True:
            async with self._sessions() as session:
                claimed = await claim_due(session, limit=self._batch, hold=self._hold)
                await session.commit()
            if not claimed:
                return total
            done = await self._delete_all(claimed)
            total.deleted += done.deleted
            total.missing += done.missing
            total.failed += done.failed
            if len(claimed) < self._batch:
                return total

    async def _delete_all(self, claimed: list[ClaimedDeletion]) -> Drained:
        done = Drained()
        finished: list[int] = []
        for row in claimed:
            try:
                existed = await self._delete(row)
            except LLMError as exc:
                if exc.status in REFUSED:
                    # The upstream says the id can never be deleted (malformed, not one of
                    # its objects): trying again would only fail again.
                    log.error(
                        "upstream_deletion.refused",
                        kind=row.kind,
                        object_id=row.object_id,
                        reason=str(exc),
                    )
                    finished.append(row.id)
                    done.missing += 1
                    continue
                delay = self._backoff(row.attempts, exc.retry_after)
                done.failed += 1
                done.retry.append((row.id, delay, str(exc)))
                log.warning(
                    "upstream_deletion.failed",
                    kind=row.kind,
                    object_id=row.object_id,
                    attempts=row.attempts + 1,
                    retry_in_s=delay,
                    reason=str(exc),
                )
                continue
            finished.append(row.id)
            if existed:
                done.deleted += 1
            else:
                done.missing += 1
            log.info(
                "upstream_deletion.done", kind=row.kind, object_id=row.object_id, existed=existed
            )
        async with self._sessions() as session:
            await mark_deleted(session, ids=finished)
            now = utcnow()
            for row_id, delay, error in done.retry:
                await retry_later(
                    session, row_id=row_id, at=now + timedelta(seconds=delay), error=error
                )
            await session.commit()
        return done

    async def _delete(self, row: ClaimedDeletion) -> bool:
        if row.kind == CONVERSATION:
            return await self._llm.delete_conversation(row.object_id)
        return await self._llm.delete_response(row.object_id)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_BACKOFF)
        return min(self._backoff_base * 2 ** min(attempts, 20), MAX_BACKOFF)

    async def _pause(self) -> float:
        async with self._sessions() as session:
            due = await next_deletion_due(session)
        if due is None:
            return self._poll
        return min(max((due - utcnow()).total_seconds(), 0.01), self._poll)
