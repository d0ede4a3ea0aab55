"""Running the Responses API's turns: the same agent as the channels, in this process.

A POST stores its response `in_progress` (or `queued` for `background`) before the model is
called, and the turn runs in a task of its own (`responses.turn`), not in the request. An
`Idempotency-Key` is unique per user in the responses table, so a retry racing the first POST
finds the first row, on any number of API processes.

A cancel marks the row `cancelled`; the process running the turn stops it at once if it is
this one, else at its next status poll (`TurnRunner._watch`). A response whose process dies
mid-turn is marked `failed` by another process once its heartbeat is a lease old
(`responses.lease`); it is not retried, because the caller may already have retried it (with
an `Idempotency-Key` if it wants one answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.prompts import (
    PromptChoice,
    bound_prompt,
    builtin_prompt,
    choose_prompt,
    find_binding,
)
from parley.agent.turn import Agent
from parley.errors import Conflict, InvalidRequest, NotFound
from parley.responses.request import CreateRequest, new_id
from parley.responses.turn import Job, TurnRunner, TurnStream
from parley.store.db import last_statement_of
from parley.store.direct import DirectWrites
from parley.store.models import (
    Account,
    AnyResponse,
    Contact,
    NewResponse,
    ResponseRecord,
    utcnow,
)
from parley.store.queries.prompt_cache import PromptCache
from parley.store.queries.responses import (
    Thread,
    api_parties,
    find_idempotent,
    get_response,
    insert_response,
    new_thread,
    open_thread,
    set_status,
    thread_of,
)

log = structlog.get_logger(__name__)

MAX_REMEMBERED_USERS = 10_000
ProfileCheck = Callable[[AsyncSession, str], Awaitable[bool]]


class Owner(Protocol):
    """The user a response belongs to (the API's authenticated caller)."""

    @property
    def user_id(self) -> int: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Started:
    record: AnyResponse
    task: asyncio.Task[None] | None
    replayed: bool = False


class ResponsesService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        agent: Agent,
        runner: TurnRunner,
        profiles: ProfileCheck | None = None,
        direct: DirectWrites | None = None,
    ) -> None:
        self._sessions = sessions
        self._direct = direct
        """On SQLite, where a new thread's two rows are sent in one trip without a session."""
        self._agent = agent
        self._profiles = profiles
        self._runner = runner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Each user's `api` account and contact, read once: they never change (see
        # `api_parties`). Kept only once the transaction that may have created them commits.
        self._parties: dict[int, tuple[Account, Contact]] = {}
        self._prompts = PromptCache()

    async def start(
        self,
        owner: Owner,
        request: CreateRequest,
        *,
        idempotency_key: str | None,
        request_hash: str,
        stream: TurnStream | None = None,
    ) -> Started:
        """Store the response and start its turn; an idempotent retry gets the first one."""
        # An empty key is no key, as the look-up below already takes it; stored, it made a
        # second request with an empty key collide with the first one's row.
        idempotency_key = idempotency_key or None
        record = _new_record(owner, request, idempotency_key, request_hash)
        async with self._sessions() as session:
            if idempotency_key:
                earlier = await find_idempotent(session, user_id=owner.user_id, key=idempotency_key)
                if earlier is not None:
                    return _replayed(earlier, request_hash)
            await self._check_model(session, request.model)
            try:
                if request.previous_response_id is None:
                    previous = None
                    thread, prompt = await self._open(session, owner, request, record)
                else:
                    previous, thread = await self._chained(session, owner, request)
                    prompt = await choose_prompt(
                        session,
                        conversation=thread.conversation,
                        account=thread.account,
                        contact=thread.contact,
                        defaults=self._agent.prompt_defaults,
                        cache=self._prompts,
                    )
                    record.conversation_id = thread.conversation.id
                    await last_statement_of(session)
                    await insert_response(session, record)
                await session.commit()
                self._remember(owner.user_id, thread)
            except IntegrityError:
                # The same Idempotency-Key raced in from a retry: the first one stands.
                await session.rollback()
                earlier = await find_idempotent(
                    session, user_id=owner.user_id, key=idempotency_key or ""
                )
                if earlier is None:
                    raise
                return _replayed(earlier, request_hash)
        if stream is not None:
            stream.started(record)
        job = Job(record, owner.user_id, request, thread, previous, stream, prompt)
        task = asyncio.create_task(self._runner.run(job), name=f"turn {record.id}")
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))
        return Started(record, task)

    async def _open(
        self, session: AsyncSession, owner: Owner, request: CreateRequest, record: NewResponse
    ) -> tuple[Thread, PromptChoice]:
        """A new thread with `record` in it, and its prompt, chosen in the response's own
        transaction (it may record an A/B assignment on the new conversation). With no
        binding, as for most callers, nothing is recorded but the two rows, and on SQLite the
        whole transaction is one trip to the database (`open_thread`)."""
        parties = self._parties.get(owner.user_id)
        if parties is None:
            parties = await api_parties(session, user_id=owner.user_id, user_name=owner.name)
        account, contact = parties
        binding = await find_binding(
            session, account=account, profile=request.model, cache=self._prompts
        )
        if binding is None:
            thread = await open_thread(
                session,
                account=account,
                contact=contact,
                profile=request.model,
                response=record,
                direct=self._direct,
            )
            prompt = builtin_prompt(
                conversation=thread.conversation,
                account=account,
                contact=contact,
                defaults=self._agent.prompt_defaults,
            )
            return thread, prompt
        thread = await new_thread(session, account=account, contact=contact, profile=request.model)
        prompt = await bound_prompt(
            session,
            binding,
            conversation=thread.conversation,
            account=account,
            contact=contact,
            defaults=self._agent.prompt_defaults,
            cache=self._prompts,
        )
        record.conversation_id = thread.conversation.id
        await last_statement_of(session)
        await insert_response(session, record)
        return thread, prompt

    def _remember(self, user_id: int, thread: Thread) -> None:
        if len(self._parties) >= MAX_REMEMBERED_USERS:
            self._parties.clear()
        self._parties[user_id] = (thread.account, thread.contact)

    async def _check_model(self, session: AsyncSession, model: str) -> None:
        if model == "default":
            return
        if self._profiles is not None and await self._profiles(session, model):
            return
        raise InvalidRequest(
            f"The model '{model}' does not exist: use 'default' or the name of an agent profile.",
            param="model",
            code="model_not_found",
        )

    async def _chained(
        self, session: AsyncSession, owner: Owner, request: CreateRequest
    ) -> tuple[ResponseRecord, Thread]:
        """The response `previous_response_id` names and its thread."""
        assert request.previous_response_id is not None
        previous = await get_response(
            session, response_id=request.previous_response_id, user_id=owner.user_id
        )
        thread = (
            await thread_of(session, conversation_id=previous.conversation_id)
            if previous is not None and previous.conversation_id is not None
            else None
        )
        if previous is None or thread is None:
            raise NotFound("response", request.previous_response_id, param="previous_response_id")
        return previous, thread

    async def cancel(self, owner: Owner, response_id: str) -> ResponseRecord:
        async with self._sessions() as session:
            record = await get_response(session, response_id=response_id, user_id=owner.user_id)
            if record is None:
                raise NotFound("response", response_id)
            if not record.background:
                raise InvalidRequest(
                    "Only responses created with background=true can be cancelled."
                )
            if await set_status(session, response_id=response_id, status="cancelled"):
                record.status = "cancelled"
            await session.commit()
        task = self._tasks.get(response_id)
        if task is not None:
            task.cancel()
        return record  # cancelled, or as it had already finished

    def running(self) -> list[str]:
        """The responses whose turns run in this process (their heartbeat is renewed)."""
        return list(self._tasks)

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


def _new_record(
    owner: Owner,
    request: CreateRequest,
    idempotency_key: str | None,
    request_hash: str,
) -> NewResponse:
    """The response's row, built before its transaction begins; its conversation is set once
    the thread is known."""
    now = utcnow()
    return NewResponse(
        id=new_id("resp"),
        user_id=owner.user_id,
        conversation_id=None,
        previous_response_id=request.previous_response_id,
        status="queued" if request.background else "in_progress",
        profile=request.model,
        request=request.public(),
        output=[],
        meta=request.metadata,
        background=request.background,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        heartbeat_at=now,
    )


def _replayed(earlier: ResponseRecord, request_hash: str) -> Started:
    if earlier.request_hash != request_hash:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
        )
    return Started(earlier, None, replayed=True)
