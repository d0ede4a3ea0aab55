"""Running the Responses API's turns: the same agent as the channels, in this process.

A POST stores its response `in_progress` (or `queued` for `background`) before the model is
called, and the turn runs in a task of its own, not in the request: a client that hangs up, a
blocking call that stops waiting, or a background call all leave the turn to finish and be
stored, to be read with GET. The turn's messages go into the thread's conversation with the
response's outcome, in one transaction.

A response whose process dies mid-turn stays `in_progress`; it is not retried, because the
caller may already have retried it (with an `Idempotency-Key` if it wants one answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.llm import Usage
from parley.agent.pricing import Price, priced_usage
from parley.agent.prompts import PromptChoice, choose_prompt
from parley.agent.safety import Limits, prepare_input
from parley.agent.tools import ToolEvent
from parley.agent.turn import Agent, TurnRequest, TurnResult
from parley.api.errors import APIError, not_found
from parley.api.responses.objects import (
    EventStream,
    function_call_item,
    message_item,
    response_object,
    usage_object,
)
from parley.errors import LLMError
from parley.responses.request import CreateRequest, context_lines, new_id
from parley.store.models import ResponseRecord, utcnow
from parley.store.queries.responses import (
    Thread,
    find_idempotent,
    get_response,
    new_thread,
    record_api_turn,
    set_status,
    thread_of,
)
from parley.store.queries.turns import Reply
from parley.store.queries.usage import add_user_usage

if TYPE_CHECKING:  # auth reaches the runtime, which builds this service
    from parley.api.auth import Caller

log = structlog.get_logger(__name__)

FAILED_MESSAGE = "The agent could not answer this time. Please try again."


@dataclass(frozen=True, slots=True)
class Started:
    record: ResponseRecord
    task: asyncio.Task[None] | None
    stream: EventStream | None
    replayed: bool = False


class ResponsesService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        agent: Agent,
        prices: dict[str, Price],
        context: str,
        profiles: Callable[[AsyncSession, str], Awaitable[bool]] | None = None,
        limits: Limits | None = None,
        refusal: str = "",
    ) -> None:
        self._limits = limits or Limits()
        self._refusal = refusal
        self._sessions = sessions
        self._agent = agent
        self._prices = prices
        # Threads branch wherever a caller points `previous_response_id`, so the upstream
        # state is chained per response, never one conversation per thread.
        self._strategy = "local" if context == "local" else "previous_response"
        self._profiles = profiles
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # --- starting -------------------------------------------------------------------------
    async def start(
        self,
        caller: Caller,
        request: CreateRequest,
        *,
        idempotency_key: str | None,
        request_hash: str,
    ) -> Started:
        async with self._sessions() as session:
            if idempotency_key:
                earlier = await find_idempotent(
                    session, user_id=caller.user_id, key=idempotency_key
                )
                if earlier is not None:
                    return _replayed(earlier, request_hash)
            await self._check_model(session, request.model)
            previous, thread = await self._thread(session, caller, request)
            # Chosen here, in the response's own transaction (it may record an A/B assignment).
            prompt = await choose_prompt(
                session,
                conversation=thread.conversation,
                account=thread.account,
                contact=thread.contact,
                defaults=self._agent.prompt_defaults,
            )
            record = ResponseRecord(
                id=new_id("resp"),
                user_id=caller.user_id,
                conversation_id=thread.conversation.id,
                previous_response_id=request.previous_response_id,
                status="queued" if request.background else "in_progress",
                profile=request.model,
                request=request.public(),
                output=[],
                meta=request.metadata,
                background=request.background,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                created_at=utcnow(),
            )
            session.add(record)
            try:
                await session.commit()
            except IntegrityError:
                # The same Idempotency-Key raced in from a retry: the first one stands.
                await session.rollback()
                earlier = await find_idempotent(
                    session, user_id=caller.user_id, key=idempotency_key or ""
                )
                if earlier is None:
                    raise
                return _replayed(earlier, request_hash)
        stream = EventStream() if request.stream else None
        if stream is not None:
            stream.started(response_object(record))
        task = asyncio.create_task(
            self._run(record, caller, request, thread, previous, stream, prompt),
            name=f"turn {record.id}",
        )
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))
        return Started(record, task, stream)

    async def _check_model(self, session: AsyncSession, model: str) -> None:
        if model == "default":
            return
        if self._profiles is not None and await self._profiles(session, model):
            return
        raise APIError(
            400,
            f"The model '{model}' does not exist: use 'default' or the name of an agent profile.",
            param="model",
            code="model_not_found",
        )

    async def _thread(
        self, session: AsyncSession, caller: Caller, request: CreateRequest
    ) -> tuple[ResponseRecord | None, Thread]:
        if request.previous_response_id is None:
            fresh = await new_thread(
                session, user_id=caller.user_id, user_name=caller.name, profile=request.model
            )
            return None, fresh
        previous = await get_response(
            session, response_id=request.previous_response_id, user_id=caller.user_id
        )
        thread = (
            await thread_of(session, conversation_id=previous.conversation_id)
            if previous is not None and previous.conversation_id is not None
            else None
        )
        if previous is None or thread is None:
            raise not_found("response", request.previous_response_id, param="previous_response_id")
        return previous, thread

    # --- the turn ---------------------------------------------------------------------------
    async def _run(
        self,
        record: ResponseRecord,
        caller: Caller,
        request: CreateRequest,
        thread: Thread,
        previous: ResponseRecord | None,
        stream: EventStream | None,
        prompt: PromptChoice,
    ) -> None:
        with structlog.contextvars.bound_contextvars(
            response_id=record.id, conversation_id=thread.conversation.id, user_id=caller.user_id
        ):
            try:
                if record.status == "queued":
                    async with self._sessions() as session:
                        await set_status(session, response_id=record.id, status="in_progress")
                        await session.commit()
                if await self._flagged(request):
                    await self._refused(record, request, thread, stream)
                    return
                turn = TurnRequest(
                    conversation_id=thread.conversation.id,
                    channel="api",
                    customer_key=f"api:user:{caller.user_id}",
                    inputs=[],
                    items=self._upstream_items(request, previous),
                    instructions=request.instructions,
                    tools=request.tools,
                    tool_choice=request.tool_choice,
                    settings=_settings(request),
                    strategy=self._strategy,
                    previous_response_id=previous.upstream_response_id if previous else None,
                    user_id=caller.user_id,
                    on_delta=stream.delta if stream else None,
                    prompt=prompt,
                )
                try:
                    result = await self._agent.run_turn(turn)
                except LLMError as exc:
                    log.error("responses.turn_failed", reason=str(exc))
                    await self._failed(record, request, thread, str(exc), stream)
                    return
                await self._completed(record, caller, request, thread, result, stream, prompt)
            except asyncio.CancelledError:
                # Cancelled by POST …/cancel (already marked) or by shutdown (marked here).
                await asyncio.shield(self._interrupted(record, stream))
                raise
            except Exception:
                log.exception("responses.turn_crashed")
                await self._failed(record, request, thread, "internal error", stream)

    async def _flagged(self, request: CreateRequest) -> bool:
        """With moderation on, the caller's text is checked first, as a channel's is; a
        moderation endpoint that fails lets the turn go on (a filter, not a gate)."""
        limits = self._limits
        texts = [
            prepare_input(text, max_chars=limits.max_input_chars, redact=limits.redact_cards)
            for text in _user_texts(request.input)
        ]
        if not limits.moderation or not texts:
            return False
        try:
            return await self._agent.flagged(texts)
        except LLMError as exc:
            log.warning("responses.moderation_unavailable", reason=str(exc))
            return False

    async def _refused(
        self,
        record: ResponseRecord,
        request: CreateRequest,
        thread: Thread,
        stream: EventStream | None,
    ) -> None:
        log.warning("responses.refused")
        output = [message_item(self._refusal)]
        usage = usage_object(Usage())
        rows = _input_rows(record, request, "refused", error="flagged by moderation")
        rows.append(
            Reply(
                direction="out",
                sender="system",
                kind="text",
                text=self._refusal,
                status="sent",
                meta={"response_id": record.id, "auto": "moderation"},
            )
        )
        completed_at = utcnow()
        async with self._sessions() as session:
            if not await set_status(
                session,
                response_id=record.id,
                status="completed",
                output=output,
                usage=usage,
                completed_at=completed_at,
            ):
                return
            await record_api_turn(
                session, thread=thread, rows=rows, last_response_id=None, usage=None
            )
            await session.commit()
        record.status, record.output, record.usage = "completed", output, usage
        record.completed_at = completed_at
        if stream is not None:
            stream.finished(response_object(record))

    def _upstream_items(
        self, request: CreateRequest, previous: ResponseRecord | None
    ) -> list[dict[str, Any]]:
        """The caller's items as the upstream takes them: our ids dropped (the upstream does
        not know them), the x_context lines before the user's text. With `local` context, a
        function output is sent after the call it answers, which only we remember."""
        items = [_upstream(item, self._limits) for item in request.input]
        if request.x_context:
            lines = "\n".join(context_lines(request.x_context))
            for item in reversed(items):
                if item.get("type") == "message" and item.get("role") == "user":
                    item["content"] = [{"type": "input_text", "text": lines}, *item["content"]]
                    break
        held = (previous.request.get("held") or []) if previous is not None else []
        answered = {i["call_id"] for i in items if i.get("type") == "function_call_output"}
        if held and answered:
            items = [h["output"] for h in held] + items
        given = {i["call_id"] for i in items if i.get("type") == "function_call"}
        if self._strategy == "local" and previous is not None and answered - given:
            calls = [
                {k: v for k, v in item.items() if k not in ("id", "status")}
                for item in previous.output
                if item.get("type") == "function_call" and item.get("call_id") in answered - given
            ]
            items = [h["call"] for h in held] + calls + items
        return items

    async def _completed(
        self,
        record: ResponseRecord,
        caller: Caller,
        request: CreateRequest,
        thread: Thread,
        result: TurnResult,
        stream: EventStream | None,
        prompt: PromptChoice,
    ) -> None:
        text = stream.streamed_text if stream and stream.streamed_text else result.text
        output: list[dict[str, Any]] = []
        if text or not result.caller_calls:
            output.append(message_item(text, item_id=stream.message_id if stream else None))
        output += [function_call_item(call) for call in result.caller_calls]
        status = "incomplete" if result.status == "incomplete" else "completed"
        incomplete = (
            {"reason": result.incomplete_reason or "max_output_tokens"}
            if status == "incomplete"
            else None
        )
        usage = priced_usage(result.model, result.usage, self._prices)
        cost = usage.cost_usd
        rows = _input_rows(record, request, "answered")
        rows += [
            _tool_row(event.call.call_id, event.call.name, event.call.arguments, event.output)
            for event in result.tool_events
        ]
        rows += [_tool_row(c.call_id, c.name, c.arguments, None) for c in result.caller_calls]
        rows.append(_agent_row(record, text, result, cost, prompt))
        usage_public, completed_at = usage_object(result.usage), utcnow()
        values: dict[str, Any] = {
            "request": {**request.public(), "held": [_held(event) for event in result.held]},
            "output": output,
            "usage": usage_public,
            "model": result.model,
            "upstream_response_id": result.response_id,
            "incomplete_details": incomplete,
            "completed_at": completed_at,
        }
        async with self._sessions() as session:
            if not await set_status(session, response_id=record.id, status=status, **values):
                log.info("responses.result_dropped", reason="no longer open (cancelled)")
                return
            await record_api_turn(
                session, thread=thread, rows=rows, last_response_id=result.response_id, usage=usage
            )
            await add_user_usage(session, user_id=caller.user_id, usage=usage)
            await session.commit()
        log.info(
            "responses.completed",
            latency_ms=result.latency_ms,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
        )
        # The caller's answer is built from this copy, with no second read of the row.
        record.status, record.output, record.usage = status, output, usage_public
        record.incomplete_details, record.model = incomplete, result.model
        record.completed_at = completed_at
        if stream is not None:
            stream.finished(response_object(record))

    async def _failed(
        self,
        record: ResponseRecord,
        request: CreateRequest,
        thread: Thread,
        reason: str,
        stream: EventStream | None,
    ) -> None:
        # The caller learns that it failed, not the upstream's words (those are stored).
        error = {"code": "server_error", "message": FAILED_MESSAGE}
        async with self._sessions() as session:
            failed = await set_status(session, response_id=record.id, status="failed", error=error)
            if failed:
                rows = _input_rows(record, request, "failed", error=reason)
                await record_api_turn(
                    session, thread=thread, rows=rows, last_response_id=None, usage=None
                )
            await session.commit()
        if failed:
            record.status, record.error = "failed", error
        if stream is not None:
            stream.finished(response_object(record))

    async def _interrupted(self, record: ResponseRecord, stream: EventStream | None) -> None:
        async with self._sessions() as session:
            await set_status(
                session,
                response_id=record.id,
                status="failed",
                error={"code": "server_error", "message": "The turn was interrupted."},
            )
            await session.commit()
            current = await session.get(ResponseRecord, record.id)
        if stream is not None and current is not None:
            stream.finished(response_object(current))

    # --- other operations --------------------------------------------------------------------
    async def cancel(self, caller: Caller, response_id: str) -> ResponseRecord:
        async with self._sessions() as session:
            record = await get_response(session, response_id=response_id, user_id=caller.user_id)
            if record is None:
                raise not_found("response", response_id)
            if not record.background:
                raise APIError(400, "Only responses created with background=true can be cancelled.")
            if await set_status(session, response_id=response_id, status="cancelled"):
                record.status = "cancelled"
            await session.commit()
        task = self._tasks.get(response_id)
        if task is not None:
            task.cancel()
        return record  # cancelled, or as it had already finished

    async def wait(self, started: Started, timeout: float) -> None:
        """Wait for the turn at most `timeout` seconds; it goes on past that."""
        if started.task is not None and not started.task.done():
            await asyncio.wait({started.task}, timeout=timeout)

    async def close(self, grace: float) -> None:
        """On shutdown: running turns get `grace` seconds, then are cancelled (and marked)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _upstream(item: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """An item as it goes upstream: without our ids, and the user's text prepared as a
    channel customer's is (length limit, card numbers masked; the stored item keeps it)."""
    clean = {key: value for key, value in item.items() if key not in ("id", "status")}
    if clean.get("type") == "message" and clean.get("role") == "user":
        clean["content"] = [
            {
                **part,
                "text": prepare_input(
                    part["text"], max_chars=limits.max_input_chars, redact=limits.redact_cards
                ),
            }
            if part.get("type") == "input_text"
            else part
            for part in clean["content"]
        ]
    return clean


def _user_texts(items: list[dict[str, Any]]) -> list[str]:
    return [
        part["text"]
        for item in items
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item["content"]
        if part.get("type") == "input_text" and part["text"]
    ]


def _held(event: ToolEvent) -> dict[str, Any]:
    call = event.call
    return {
        "call": {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        "output": {"type": "function_call_output", "call_id": call.call_id, "output": event.output},
    }


def _replayed(earlier: ResponseRecord, request_hash: str) -> Started:
    if earlier.request_hash != request_hash:
        raise APIError(
            409,
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
            type="invalid_request_error",
        )
    return Started(earlier, None, None, replayed=True)


def _settings(request: CreateRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if request.temperature is not None:
        settings["temperature"] = request.temperature
    if request.max_output_tokens is not None:
        settings["max_output_tokens"] = request.max_output_tokens
    return settings


def _input_rows(
    record: ResponseRecord, request: CreateRequest, status: str, error: str | None = None
) -> list[Reply]:
    rows = []
    for item in request.input:
        meta: dict[str, Any] = {"response_id": record.id, "item_id": item["id"]}
        if item["type"] == "message":
            texts = [p["text"] for p in item["content"] if "text" in p]
            role = item["role"]
            if role == "user" and request.x_context is not None:
                meta["x_context"] = request.x_context
            rows.append(
                Reply(
                    direction="in" if role in ("user", "system", "developer") else "out",
                    sender={"user": "customer", "assistant": "agent"}.get(role, "developer"),
                    kind="text" if len(texts) == len(item["content"]) else "mixed",
                    text="\n".join(texts) or None,
                    status=status if role == "user" else "done",
                    payload=item,
                    meta=meta,
                    error=error if role == "user" else None,
                )
            )
        else:
            rows.append(
                Reply(
                    direction="internal",
                    sender="tool",
                    kind=item["type"],
                    text=item.get("output") or item.get("arguments"),
                    status="done",
                    payload=item,
                    meta=meta,
                )
            )
    return rows


def _tool_row(call_id: str, name: str, arguments: str, output: str | None) -> Reply:
    text = f"{name}({arguments})" + (f" -> {output}" if output is not None else "")
    return Reply(
        direction="internal",
        sender="tool",
        kind="tool_call",
        text=text,
        status="done",
        meta={"call_id": call_id, "name": name, "arguments": arguments, "output": output},
    )


def _agent_row(
    record: ResponseRecord,
    text: str,
    result: TurnResult,
    cost: Decimal | None,
    prompt: PromptChoice,
) -> Reply:
    meta: dict[str, Any] = {"response_id": record.id}
    # Which prompt answered: the dashboard's (OPENAI_PROMPT_ID), else Parley's own version.
    own = prompt if prompt.name and not result.prompt else None
    if result.prompt:
        meta["prompt"] = {"id": result.prompt}
    elif own is not None:
        meta["prompt"] = own.label
    return Reply(
        direction="out",
        sender="agent",
        kind="text",
        text=text,
        status="sent",
        response_id=result.response_id,
        model=result.model,
        input_tokens=result.usage.input_tokens,
        cached_tokens=result.usage.cached_tokens,
        output_tokens=result.usage.output_tokens,
        reasoning_tokens=result.usage.reasoning_tokens,
        cost_usd=cost,
        latency_ms=result.latency_ms,
        prompt_version_id=own.version_id if own else None,
        meta=meta,
    )
