"""One Responses API turn, run in a task of its own: the agent answers, and the response's
outcome (completed, incomplete, refused, failed, interrupted) is stored with the thread's
messages in one transaction.

The turn outlives the HTTP request that started it: a client that hangs up, a blocking call
that stops waiting, or a background call all leave it to finish and be stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import Usage
from parley.agent.outcome import InputGate, answer_rows, priced, tool_rows
from parley.agent.pricing import Price
from parley.agent.prompts import PromptChoice
from parley.agent.turn import Agent, TurnRequest, TurnResult
from parley.errors import ConversationGone, LLMError
from parley.responses.items import (
    caller_texts,
    function_call_item,
    held_item,
    input_rows,
    message_item,
    upstream_items,
    usage_object,
)
from parley.responses.request import CreateRequest
from parley.store.direct import DirectWrites
from parley.store.models import AnyResponse, NewResponse, ResponseRecord, utcnow
from parley.store.queries.responses import (
    ResponseClosed,
    Thread,
    delete_response,
    guard_status,
    guard_status_step,
    response_status,
    set_status,
)
from parley.store.queries.turns import Reply, record_turn, record_turn_directly
from parley.store.queries.usage import UsageAdd

log = structlog.get_logger(__name__)

CANCEL_POLL_SECONDS = 1.0
"""How often a running background turn reads its own status, so that a cancel made on another
replica (which can only mark the row) stops it: one primary-key read a second per turn."""
FAILED_MESSAGE = "The agent could not answer this time. Please try again."
INTERRUPTED_MESSAGE = "The turn was interrupted."


class TurnStream(Protocol):
    """Where a streamed response's events go (the HTTP door renders them as SSE)."""

    @property
    def message_id(self) -> str | None: ...

    @property
    def streamed_text(self) -> str: ...

    def started(self, record: AnyResponse) -> None: ...

    async def delta(self, text: str) -> None: ...

    def finished(self, record: AnyResponse) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """A response to answer, with everything chosen when it was created."""

    record: NewResponse
    user_id: int
    request: CreateRequest
    thread: Thread
    previous: ResponseRecord | None
    stream: TurnStream | None
    prompt: PromptChoice


class TurnRunner:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        agent: Agent,
        gate: InputGate,
        prices: dict[str, Price],
        context: str,
        refusal: str,
        direct: DirectWrites | None = None,
    ) -> None:
        self._sessions = sessions
        self._agent = agent
        self._gate = gate
        self._prices = prices
        self._refusal = refusal
        self._direct = direct
        """On SQLite, where a response's outcome is sent in one trip without a session."""
        # Threads branch wherever a caller points `previous_response_id`, so the upstream
        # state is chained per response, never one conversation per thread.
        self._strategy = "local" if context == "local" else "previous_response"

    async def run(self, job: Job) -> None:
        with structlog.contextvars.bound_contextvars(
            response_id=job.record.id,
            conversation_id=job.thread.conversation.id,
            user_id=job.user_id,
        ):
            turn = asyncio.current_task()
            watcher = (
                asyncio.create_task(self._watch(job, turn), name=f"cancel watch {job.record.id}")
                if job.record.background and turn is not None
                else None
            )
            try:
                await self._run(job)
            except asyncio.CancelledError:
                # Cancelled by POST …/cancel (already marked) or by shutdown (marked here).
                await asyncio.shield(self._interrupted(job))
                raise
            except ConversationGone:
                # Retention deleted the thread (with its response) while the turn ran.
                log.info("responses.result_dropped", reason="conversation gone")
            except Exception:
                log.exception("responses.turn_crashed")
                await self._failed(job, "internal error")
            finally:
                if watcher is not None:
                    watcher.cancel()

    async def _watch(self, job: Job, turn: asyncio.Task[Any]) -> None:
        """Cancel the turn once its row says `cancelled` (POST …/cancel on any replica)."""
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                async with self._sessions() as session:
                    status = await response_status(session, response_id=job.record.id)
            except Exception:  # the store is down for a moment: ask again at the next poll
                log.warning("responses.cancel_poll_failed", exc_info=True)
                continue
            if status == "cancelled":
                log.info("responses.cancelled_elsewhere")
                turn.cancel()
                return

    async def _run(self, job: Job) -> None:
        if job.record.status == "queued":
            async with self._sessions() as session:
                await set_status(session, response_id=job.record.id, status="in_progress")
                await session.commit()
        if await self._gate.refuses(self._gate.prepare(caller_texts(job.request))):
            await self._refused(job)
            return
        try:
            result = await self._agent.run_turn(self._turn_request(job))
        except LLMError as exc:
            log.error("responses.turn_failed", reason=str(exc))
            await self._failed(job, str(exc))
            return
        await self._completed(job, result)

    def _turn_request(self, job: Job) -> TurnRequest:
        request, previous = job.request, job.previous
        return TurnRequest(
            conversation_id=job.thread.conversation.id,
            channel="api",
            customer_key=f"api:user:{job.user_id}",
            inputs=[],
            items=upstream_items(request, previous, self._gate, local=self._strategy == "local"),
            # The caller's instructions are its text like any other: cut and masked.
            instructions=self._gate.prepare([request.instructions])[0]
            if request.instructions
            else None,
            tools=request.tools,
            tool_choice=request.tool_choice,
            settings=_model_settings(request),
            strategy=self._strategy,
            previous_response_id=previous.upstream_response_id if previous else None,
            user_id=job.user_id,
            on_delta=job.stream.delta if job.stream else None,
            fresh=previous is None,
            prompt=job.prompt,
        )

    async def _refused(self, job: Job) -> None:
        refusal = Reply(
            self._refusal,
            sender="system",
            direction="out",
            status="sent",
            deliver=False,
            meta={"response_id": job.record.id, "auto": "moderation"},
        )
        rows = [*input_rows(job.record, job.request, "refused", "flagged by moderation"), refusal]
        values = {"output": [message_item(self._refusal)], "usage": usage_object(Usage())}
        await self._finish(job, "completed", values, rows, last_response_id=None, usage=None)

    async def _completed(self, job: Job, result: TurnResult) -> None:
        stream = job.stream
        text = stream.streamed_text if stream and stream.streamed_text else result.text
        output: list[dict[str, Any]] = []
        if text or not result.caller_calls:
            output.append(message_item(text, item_id=stream.message_id if stream else None))
        output += [function_call_item(call) for call in result.caller_calls]
        incomplete = result.status == "incomplete"
        usage = priced(result, self._prices)
        rows = input_rows(job.record, job.request, "answered") + tool_rows(result)
        rows += answer_rows(
            result,
            [text],
            usage=usage,
            prompt=job.prompt,
            meta={"response_id": job.record.id},
            deliver=False,
            status="sent",
        )
        values: dict[str, Any] = {
            "request": {**job.request.public(), "held": [held_item(e) for e in result.held]},
            "output": output,
            "usage": usage_object(result.usage),
            "model": result.model,
            "upstream_response_id": result.response_id,
            "incomplete_details": (
                {"reason": result.incomplete_reason or "max_output_tokens"} if incomplete else None
            ),
        }
        status = "incomplete" if incomplete else "completed"
        if await self._finish(job, status, values, rows, result.response_id, usage):
            log.info(
                "responses.completed",
                latency_ms=result.latency_ms,
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
            )

    async def _finish(
        self,
        job: Job,
        status: str,
        values: dict[str, Any],
        rows: list[Reply],
        last_response_id: str | None,
        usage: UsageAdd | None,
    ) -> bool:
        """The response's outcome and the thread's rows in one transaction, if the response is
        still open (a cancelled one stays cancelled); then the stream's last events."""
        values = {**values, "completed_at": utcnow()}
        try:
            # Still open, as nearly always: the outcome and the thread's rows in one trip to
            # SQLite's thread, the status's UPDATE a guard in it.
            if self._direct is not None and self._direct.ready and job.request.store:
                await record_turn_directly(
                    self._direct,
                    self._sessions,
                    before=[
                        guard_status_step(
                            self._direct, response_id=job.record.id, status=status, **values
                        )
                    ],
                    **self._outcome(job, rows, last_response_id, usage),
                )
            else:  # PostgreSQL; a response not stored
                async with self._sessions() as session:
                    await guard_status(session, response_id=job.record.id, status=status, **values)
                    stored = job.request.store  # else the response's delete follows the rows
                    await self._record(session, job, rows, last_response_id, usage, commits=stored)
                    if not stored:
                        await delete_response(
                            session, response_id=job.record.id, user_id=job.user_id
                        )
                        await session.commit()
        except ResponseClosed:
            async with self._sessions() as session:
                current = await session.get(ResponseRecord, job.record.id)
                if current is not None:  # cancelled, or closed by another process's sweep
                    log.info(
                        "responses.result_dropped", reason=f"no longer open ({current.status})"
                    )
                    # A caller still waiting is answered with the response as it stands.
                    job.record.status, job.record.error = current.status, current.error
                    return False
                # Deleted while it ran (DELETE mid-stream): the object is gone, but the turn
                # happened, so its messages and usage are recorded all the same.
                log.info("responses.deleted_while_running")
                await self._record(session, job, rows, last_response_id, usage, commits=True)
        # The caller's answer is built from this copy, with no second read of the row.
        record = job.record
        record.status = status
        for name, value in values.items():
            setattr(record, name, value)
        if job.stream is not None:
            job.stream.finished(record)
        return True

    @staticmethod
    def _outcome(
        job: Job, rows: list[Reply], last_response_id: str | None, usage: UsageAdd | None
    ) -> dict[str, Any]:
        """`record_turn`'s arguments for `job`'s outcome."""
        thread = job.thread
        return {
            "conversation_id": thread.conversation.id,
            "account_id": thread.account.id,
            "answered": [],
            "replies": rows,
            "last_response_id": last_response_id,
            "usage": usage,
            "user_id": job.user_id,
        }

    async def _record(
        self,
        session: AsyncSession,
        job: Job,
        rows: list[Reply],
        last_response_id: str | None,
        usage: UsageAdd | None,
        *,
        commits: bool = False,
    ) -> None:
        await record_turn(
            session, **self._outcome(job, rows, last_response_id, usage), commits=commits
        )

    async def _failed(self, job: Job, reason: str) -> None:
        # The caller learns that it failed, not the upstream's words (those are stored).
        error = {"code": "server_error", "message": FAILED_MESSAGE}
        record = job.record
        async with self._sessions() as session:
            failed = await set_status(session, response_id=record.id, status="failed", error=error)
            # A deleted response (gone while it ran) is failed all the same, for the stream.
            gone = not failed and await session.get(ResponseRecord, record.id) is None
            if failed or gone:
                rows = input_rows(record, job.request, "failed", error=reason)
                await self._record(session, job, rows, None, None)
            if not job.request.store:
                await delete_response(session, response_id=record.id, user_id=job.user_id)
            await session.commit()
        if failed or gone:
            record.status, record.error = "failed", error
        if job.stream is not None:
            job.stream.finished(record)

    async def _interrupted(self, job: Job) -> None:
        error = {"code": "server_error", "message": INTERRUPTED_MESSAGE}
        async with self._sessions() as session:
            await set_status(session, response_id=job.record.id, status="failed", error=error)
            current: AnyResponse | None = await session.get(ResponseRecord, job.record.id)
            if not job.request.store:
                await delete_response(session, response_id=job.record.id, user_id=job.user_id)
            await session.commit()
        if job.stream is not None:
            if current is None:  # deleted meanwhile: the stream still ends, as failed
                current = job.record
                current.status, current.error = "failed", error
            job.stream.finished(current)


def _model_settings(request: CreateRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if request.temperature is not None:
        settings["temperature"] = request.temperature
    if request.max_output_tokens is not None:
        settings["max_output_tokens"] = request.max_output_tokens
    for name in ("top_p", "text", "reasoning"):
        value = getattr(request, name)
        if value is not None:
            settings[name] = value
    return settings
