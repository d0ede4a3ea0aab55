"""One conversation's turns: load what waits, run the agent, store the answer with its outbox.

Called with the conversation held (see `queue`), so turns of one conversation never overlap;
messages that arrive during a turn are answered together by the next one, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.outcome import InputGate, answer_rows, priced, tool_rows
from parley.agent.pricing import DEFAULT_PRICES, Price
from parley.agent.prompts import PromptChoice
from parley.agent.turn import Agent, TurnRequest
from parley.channels.render import render_text
from parley.errors import ConversationGone, LeaseLost, LLMError
from parley.observability import tracing
from parley.observability.metrics import DEAD_LETTERS, TURN_SECONDS, TURNS
from parley.store.db import last_statement_of
from parley.store.direct import DirectWrites, Reads
from parley.store.models import Account, Contact, Message, utcnow
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.turns import (
    Reply,
    TurnWork,
    auto_reply_since,
    inbound_since,
    load_work,
    record_turn,
    record_turn_directly,
    start_attempt,
    start_attempt_directly,
    waits_directly,
)
from parley.store.queries.upstream_deletions import RESPONSE, UpstreamObject, queue_deletions
from parley.store.queries.usage import UsageAdd
from parley.worker.media import MediaReader, ReadMessage, plain

log = structlog.get_logger(__name__)


class Receipts(Protocol):
    async def mark_read(
        self, account: Account, message: Message, contact: Contact | None = None
    ) -> None:
        """Show the customer their message was read and a reply is being typed (best effort)."""


@dataclass(frozen=True, slots=True)
class Replies:
    """The fixed texts a customer may get instead of the agent's answer."""

    fallback: str
    unsupported: str
    rate_limited: str = ""
    refusal: str = ""


RATE_WINDOW = timedelta(minutes=1)


DEAD_LETTER = "dead-lettered after {attempts} turns that did not finish"


class ConversationProcessor:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        agent: Agent,
        gate: InputGate,
        receipts: Receipts,
        replies: Replies,
        on_outbox: Callable[[], None],
        max_attempts: int = 3,
        prices: dict[str, Price] | None = None,
        accounts: AccountDirectory | None = None,
        media: MediaReader | None = None,
        direct: DirectWrites | None = None,
    ) -> None:
        self._sessions = sessions
        self._agent = agent
        self._receipts = receipts
        self._replies = replies
        self._on_outbox = on_outbox
        self._max_attempts = max_attempts
        self._prices = prices if prices is not None else DEFAULT_PRICES
        self._gate = gate
        self._accounts = accounts
        self._media = media
        """Reads the files messages carry; None: they are only named to the agent."""
        self._direct = direct
        """A turn's start and outcome, and the reads it repeats, without a session
        (`store.direct`: SQLite's line, or asyncpg's own API on PostgreSQL)."""
        self._reads = Reads(sessions, direct)
        self._waiting: dict[int, bool] = {}
        """By conversation, whether messages waited after its turn's outcome was stored (on
        SQLite, read in the same trip), for `_waits` to take."""

    async def process(self, conversation_id: int) -> int:
        """Run turns until nothing waits; returns how many turns ran."""
        turns = 0
        try:
            while True:
                work = await load_work(self._reads, conversation_id=conversation_id)
                if work is None or not _agent_answers(work):
                    return turns
                if await self._not_served(work) or await self._dead_letter(work):
                    continue
                earlier = await self._start(work)
                self._waiting.pop(conversation_id, None)  # this turn's outcome tells, or none
                await self._turn(work, earlier)
                turns += 1
                if not await self._waits(conversation_id):
                    return turns
        finally:
            self._waiting.pop(conversation_id, None)

    async def _waits(self, conversation_id: int) -> bool:
        """After a turn, whether more waits: on SQLite read in the trip that stored the turn's
        outcome, or in one indexed read without a session (`waits_directly`), not
        `load_work`'s join of the parties. A message filed after that read signals the
        conversation again, so it is answered all the same."""
        known = self._waiting.pop(conversation_id, None)
        if known is not None:
            return known
        if self._direct is None or not self._direct.ready:
            return True
        return await waits_directly(self._direct, conversation_id=conversation_id)

    async def _not_served(self, work: TurnWork) -> bool:
        """Messages to an account that must not be answered (unknown on a channel with
        configured accounts, disabled, removed) are kept as `ignored`, with the reason, and
        cost no model call, receipt or send."""
        if self._accounts is None:
            return False
        reason = await self._accounts.refusal(work.account)
        if reason is None:
            return False
        log.warning(
            "turn.not_answered",
            reason=reason,
            channel=work.account.channel,
            account_external_id=work.account.external_id,
            messages=len(work.pending),
            correlation_id=work.pending[-1].meta.get("correlation_id"),
        )
        await self._store(work, [], status="ignored", error=reason)
        TURNS.labels("ignored").inc()
        return True

    async def _dead_letter(self, work: TurnWork) -> bool:
        """Give up on messages whose turns keep dying (a crash, a kill, a poison input): the
        customer gets the fallback, the message is `failed` for an operator to retry."""
        dead = [m for m in work.pending if m.attempts >= self._max_attempts]
        if not dead:
            return False
        reason = DEAD_LETTER.format(attempts=self._max_attempts)
        log.error(
            "turn.dead_lettered",
            conversation_id=work.conversation.id,
            messages=len(dead),
            correlation_id=dead[-1].meta.get("correlation_id"),
        )
        await self._store(
            replace(work, pending=dead), [self._fallback()], status="failed", error=reason
        )
        TURNS.labels("dead_lettered").inc()
        DEAD_LETTERS.labels("turn").inc(len(dead))
        return True

    async def _start(self, work: TurnWork) -> int:
        """Count the turn started; returns how many of the customer's messages were handled
        within the rate window (`_within_rate`), read in the same transaction."""
        since = utcnow() - RATE_WINDOW
        if self._direct is not None and self._direct.ready:
            return await start_attempt_directly(
                self._direct,
                message_ids=[m.id for m in work.pending],
                conversation_id=work.conversation.id,
                since=since,
            )
        async with self._sessions() as session:
            await start_attempt(session, message_ids=[m.id for m in work.pending])
            await last_statement_of(session)  # the count carries the COMMIT (SQLite)
            earlier = await inbound_since(
                session, conversation_id=work.conversation.id, since=since
            )
            await session.commit()
        return earlier

    async def _refuse(self, work: TurnWork) -> None:
        """Flagged input gets the refusal and never reaches the model."""
        refusal = Reply(self._replies.refusal, sender="system", meta={"auto": "moderation"})
        await self._store(work, [refusal], status="refused", error="flagged by moderation")

    async def _within_rate(self, work: TurnWork, earlier: int) -> TurnWork:
        """Answer at most `messages_per_minute` of a customer's messages per minute (`earlier`
        of them were handled within the window); the rest are stored as `ignored`, and the
        customer gets one polite notice a minute."""
        allowed = self._gate.allowed(earlier=earlier)
        if allowed >= len(work.pending):
            return work
        async with self._sessions() as session:
            noticed = await auto_reply_since(
                session,
                conversation_id=work.conversation.id,
                kind="rate_limited",
                since=utcnow() - RATE_WINDOW,
            )
        excess = work.pending[allowed:]
        log.warning("turn.rate_limited", messages=len(excess), notice=not noticed)
        notice = Reply(self._replies.rate_limited, sender="system", meta={"auto": "rate_limited"})
        await self._store(
            replace(work, pending=excess),
            [] if noticed else [notice],
            status="ignored",
            error="rate limited",
        )
        return replace(work, pending=work.pending[:allowed])

    def _fallback(self) -> Reply:
        return Reply(self._replies.fallback, sender="system", meta={"auto": "fallback"})

    async def _turn(self, work: TurnWork, earlier: int) -> None:
        correlation_ids = [m.meta.get("correlation_id") for m in work.pending]
        started = time.perf_counter()
        with (
            structlog.contextvars.bound_contextvars(
                conversation_id=work.conversation.id,
                account_id=work.account.id,
                channel=work.conversation.channel,
                correlation_id=correlation_ids[-1],
            ),
            tracing.span_after("parley.turn", correlation_ids, channel=work.conversation.channel),
        ):
            outcome = await self._outcome(work, earlier)
        TURNS.labels(outcome).inc()
        TURN_SECONDS.labels(outcome).observe(time.perf_counter() - started)

    async def _outcome(self, work: TurnWork, earlier: int) -> str:
        """Run the turn; returns its outcome, as `parley_turns_total` counts it."""
        await self._receipts.mark_read(work.account, work.pending[-1], work.contact)
        work = await self._within_rate(work, earlier)
        if not work.pending:
            return "rate_limited"
        read = await self._read(work)
        texts = [r.text for r in read if r.text]
        if all(r.empty for r in read):
            await self._unsupported(work)
            return "unsupported"
        if await self._gate.refuses(texts):
            await self._refuse(work)
            return "refused"
        return await self._answer(work, read)

    async def _read(self, work: TurnWork) -> list[ReadMessage]:
        """The waiting messages as the model gets them: files read, the customer's words
        gated (cut to length, cards masked)."""
        if self._media is None:
            read = [plain(m) for m in work.pending]
        else:
            read = await self._media.read(work)
        return [replace(r, text=self._gate.prepare([r.text])[0]) if r.text else r for r in read]

    async def _unsupported(self, work: TurnWork) -> None:
        reply = Reply(self._replies.unsupported, sender="system", meta={"auto": "unsupported"})
        await self._store(work, [reply], status="answered")
        log.info("turn.unsupported", messages=len(work.pending))

    async def _answer(self, work: TurnWork, read: list[ReadMessage]) -> str:
        prompt = await self._agent.prompt_for(work.conversation, work.account, work.contact)
        started = time.perf_counter()
        try:
            result = await self._agent.run_turn(_request(work, read, prompt))
        except LLMError as exc:
            await self._fail(work, str(exc), prompt, started)
            return "failed"
        usage = priced(result, self._prices)
        if not result.text.strip():
            await self._fail(work, "upstream returned no text", prompt, started)
            return "failed"
        parts = render_text(work.conversation.channel, result.text)
        replies = tool_rows(result)
        replies += answer_rows(result, parts, usage=usage, prompt=prompt, numbered=True)
        await self._store(
            work,
            replies,
            status="answered",
            response_id=result.response_id,
            usage=usage,
            context_tokens=result.context_tokens,
        )
        log.info(
            "turn.completed",
            outcome="answered",
            messages=len(work.pending),
            model=result.model,
            prompt=_prompt_name(prompt),
            prompt_version=prompt.version if prompt is not None else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=float(usage.cost_usd) if usage.cost_usd is not None else None,
            latency_ms=round((time.perf_counter() - started) * 1000),
            upstream_ms=result.latency_ms,
        )
        return "answered"

    async def _fail(
        self,
        work: TurnWork,
        reason: str,
        prompt: PromptChoice | None = None,
        started: float | None = None,
    ) -> None:
        log.error(
            "turn.failed",
            outcome="failed",
            reason=reason,
            messages=len(work.pending),
            prompt=_prompt_name(prompt),
            prompt_version=prompt.version if prompt is not None else None,
            latency_ms=round((time.perf_counter() - started) * 1000) if started else None,
        )
        await self._store(work, [self._fallback()], status="failed", error=reason)

    async def _store(
        self,
        work: TurnWork,
        replies: list[Reply],
        *,
        status: str,
        error: str | None = None,
        response_id: str | None = None,
        usage: UsageAdd | None = None,
        context_tokens: int | None = None,
    ) -> None:
        correlation = work.pending[-1].meta.get("correlation_id")
        stamped = [
            replace(r, meta={**(r.meta or {}), "correlation_id": correlation}) for r in replies
        ]
        try:
            await self._record(work, stamped, status, error, response_id, usage, context_tokens)
        except LeaseLost:
            log.warning("turn.superseded", messages=len(work.pending))
            return
        except ConversationGone:
            await self._dropped(response_id)
            return
        self._on_outbox()

    async def _dropped(self, response_id: str | None) -> None:
        """The conversation expired or its customer was erased while the turn ran: nothing of
        the turn is stored, and the response it made upstream is queued for deletion."""
        log.info("turn.dropped", reason="conversation gone", response_id=response_id)
        if response_id is None:
            return
        async with self._sessions() as session:
            await queue_deletions(
                session, objects=[UpstreamObject(RESPONSE, response_id)], reason="orphan"
            )
            await session.commit()

    async def _record(
        self,
        work: TurnWork,
        replies: list[Reply],
        status: str,
        error: str | None,
        response_id: str | None,
        usage: UsageAdd | None,
        context_tokens: int | None = None,
    ) -> None:
        outcome: dict[str, Any] = {
            "conversation_id": work.conversation.id,
            "account_id": work.account.id,
            "answered": [m.id for m in work.pending],
            "replies": replies,
            "inbound_status": status,
            "inbound_error": error,
            "last_response_id": response_id,
            "last_input_tokens": context_tokens,
            "usage": usage,
            "agent_turn": True,
        }
        if self._direct is not None and self._direct.ready:
            waiting = await record_turn_directly(
                self._direct, self._sessions, **outcome, then_waiting=True
            )
            self._waiting[work.conversation.id] = bool(waiting)
            return
        async with self._sessions() as session:
            await record_turn(session, **outcome, commits=True)


def _prompt_name(prompt: PromptChoice | None) -> str | None:
    """The prompt's name as the logs give it: `builtin` for the built-in one."""
    if prompt is None:
        return None
    return prompt.name or "builtin"


def _agent_answers(work: TurnWork) -> bool:
    """Only conversations in agent mode: in human mode a person answers what waits."""
    return work.conversation.status == "active" and work.conversation.mode == "agent"


def _request(
    work: TurnWork, read: list[ReadMessage], prompt: PromptChoice | None = None
) -> TurnRequest:
    unreadable = list(dict.fromkeys(what for r in read for what in r.unreadable))
    notes = []
    if unreadable:
        notes.append(
            f"The customer also sent what you cannot open: {'; '.join(unreadable)}. "
            "Say so briefly, and ask them to type it or send it again if it matters."
        )
    return TurnRequest(
        conversation_id=work.conversation.id,
        channel=work.conversation.channel,
        customer_key=f"{work.account.channel}:{work.account.external_id}:{work.contact.external_id}",
        inputs=[r.text for r in read if r.text],
        items=[r.item() for r in read if not r.empty],
        notes=notes,
        remote_conversation_id=work.conversation.remote_conversation_id,
        previous_response_id=work.conversation.last_response_id,
        last_input_tokens=work.conversation.last_input_tokens,
        prompt=prompt,
    )
