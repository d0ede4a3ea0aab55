"""The Responses API's rows: the response objects, the thread each belongs to, and the turn's
messages, stored in the same tables as the channels' conversations.

A caller is one `api` account with one contact (the user); each thread that starts without a
`previous_response_id` is a conversation of its own, and the responses chained on it share it.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert, Update

from parley.store.db import (
    defers_next_statement,
    ends_with_next_statement,
    execute_guarded,
    holds_statements,
)
from parley.store.direct import DirectWrites, Step, step
from parley.store.models import (
    CONVERSATIONS,
    RESPONSES,
    Account,
    AnyConversation,
    Contact,
    NewConversation,
    NewResponse,
    ResponseRecord,
    utcnow,
)
from parley.store.queries.inbound import get_account
from parley.store.queries.turns import conversation_parties
from parley.store.queries.upsert import insert_ignore

API_CHANNEL = "api"
OPEN_STATUSES = ("queued", "in_progress")
HEARTBEAT_CHUNK = 500
"""Response ids per heartbeat UPDATE: far below SQLite's and asyncpg's parameter limits."""
# The tables and columns for the Core statements below.
_COLUMNS = tuple(RESPONSES.c.keys())
_values_of = operator.attrgetter(*_COLUMNS)
"""A `NewResponse`'s values in the order of `_COLUMNS` (its fields are named as they are)."""
_INSERT_RESPONSE = insert(RESPONSES)


@dataclass(frozen=True, slots=True)
class Thread:
    conversation: AnyConversation
    account: Account
    contact: Contact


async def api_parties(
    session: AsyncSession, *, user_id: int, user_name: str
) -> tuple[Account, Contact]:
    """The user's `api` account and contact, created on first use. Neither ever changes nor
    goes away while the user exists, so a process may keep them (`ResponsesService`)."""
    account = await get_account(session, channel=API_CHANNEL, external_id=str(user_id))
    key = f"user:{user_id}"
    await insert_ignore(
        session,
        Contact,
        {
            "account_id": account.id,
            "external_id": key,
            "name": user_name,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        },
        ["account_id", "external_id"],
    )
    contact = await session.scalar(
        select(Contact).where(Contact.account_id == account.id, Contact.external_id == key)
    )
    assert contact is not None
    return account, contact


async def api_account_id(session: AsyncSession, *, user_id: int) -> int | None:
    """The id of the user's `api` account (whose conversations are the user's own), or None
    before their first response created it."""
    found = await session.scalar(
        select(Account.id).where(
            Account.channel == API_CHANNEL, Account.external_id == str(user_id)
        )
    )
    return int(found) if found is not None else None


async def new_thread(
    session: AsyncSession, *, account: Account, contact: Contact, profile: str
) -> Thread:
    """A new conversation for the user, under their `api` account and contact.

    One Core INSERT … RETURNING, built once, on the session's connection; the conversation
    comes back as a plain object (`NewConversation`), outside the session (its callers only
    read it), without the ORM's bulk-insert machinery around one row."""
    connection = await session.connection()
    result = await connection.execute(
        _new_thread_statement(), _new_thread_values(account, contact, profile, utcnow())
    )
    conversation = NewConversation(*result.one())
    return Thread(conversation, account, contact)


async def open_thread(
    session: AsyncSession,
    *,
    account: Account,
    contact: Contact,
    profile: str,
    response: NewResponse,
    direct: DirectWrites | None = None,
) -> Thread:
    """A new conversation for the user with `response`, its first response, in it; the
    caller commits right after, with nothing in between.

    With `direct` ready and nothing read on `session` yet (its caches answered), the two rows
    are committed here, sent whole on SQLite's line without the session (`store.direct`).

    On SQLite, one trip to the database's thread: the BEGIN, the conversation's INSERT, the
    response's (which takes the conversation's id from `last_insert_rowid()` and returns it)
    and the COMMIT. The transaction holds the process's one connection for that trip alone,
    where a trip for the conversation's id and one more for the rest held it across a turn
    of a busy event loop in between. Elsewhere, `new_thread` and `insert_response`."""
    if direct is not None and direct.ready and not session.in_transaction():
        return await _open_thread_directly(direct, account, contact, profile, response)
    connection = await session.connection()
    if not holds_statements(connection):
        thread = await new_thread(session, account=account, contact=contact, profile=profile)
        response.conversation_id = thread.conversation.id
        await insert_response(session, response)
        return thread
    await session.flush()  # nothing of the ORM's left for the COMMIT to write after
    now = utcnow()
    defers_next_statement(connection)
    await connection.execute(
        _INSERT_CONVERSATION, _new_thread_values(account, contact, profile, now)
    )
    ends_with_next_statement(connection)
    values = _first_response_values(response)
    result = await connection.execute(_insert_response_in_new_thread(), values)
    response.conversation_id = int(result.scalar_one())
    conversation = NewConversation(response.conversation_id, API_CHANNEL, profile, None)
    return Thread(conversation, account, contact)


async def _open_thread_directly(
    direct: DirectWrites, account: Account, contact: Contact, profile: str, response: NewResponse
) -> Thread:
    conversation = _new_thread_values(account, contact, profile, utcnow())
    values = _first_response_values(response)
    opening = direct.prepared("thread", lambda: _INSERT_CONVERSATION, list(conversation))
    first = direct.prepared("first response", _insert_response_in_new_thread, list(values))
    ((conversation_id,),) = await direct.commit(
        [step(opening, conversation)], last=step(first, values)
    )
    response.conversation_id = int(conversation_id)
    return Thread(NewConversation(conversation_id, API_CHANNEL, profile, None), account, contact)


def _first_response_values(response: NewResponse) -> dict[str, Any]:
    """A new thread's first response's values; its conversation's id is taken in SQL."""
    values = dict(zip(_COLUMNS, _values_of(response), strict=True))
    del values["conversation_id"]
    return values


def _new_thread_values(
    account: Account, contact: Contact, profile: str, now: datetime
) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "contact_id": contact.id,
        "channel": API_CHANNEL,
        "profile": profile,
        "created_at": now,
        "updated_at": now,
        "last_message_at": now,
    }


_INSERT_CONVERSATION = insert(CONVERSATIONS)


@functools.cache
def _insert_response_in_new_thread() -> ReturningInsert[int]:
    """SQLite: a response in the conversation inserted just before it on the connection."""
    return (
        insert(RESPONSES)
        .values(conversation_id=func.last_insert_rowid())
        .returning(RESPONSES.c.conversation_id)
    )


@functools.cache
def _new_thread_statement() -> ReturningInsert[*tuple[Any, ...]]:
    """The columns of a `NewConversation` back, in the order of its fields."""
    columns = CONVERSATIONS.c
    return _INSERT_CONVERSATION.returning(
        columns.id, columns.channel, columns.profile, columns.prompt_version_id
    )


async def thread_of(session: AsyncSession, *, conversation_id: int) -> Thread | None:
    parties = await conversation_parties(session, conversation_id=conversation_id)
    return Thread(*parties) if parties is not None else None


RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a response id can be (ours are `resp_` and 48 hex digits). Anything else is known to be
absent without asking the database, which may not even take it as a parameter (a NUL on
PostgreSQL)."""


async def get_response(
    session: AsyncSession, *, response_id: str, user_id: int
) -> ResponseRecord | None:
    """The user's response with that id; another user's is as absent as a missing one."""
    if not RESPONSE_ID.fullmatch(response_id):
        return None
    record = await session.scalar(
        select(ResponseRecord).where(
            ResponseRecord.id == response_id, ResponseRecord.user_id == user_id
        )
    )
    # A `store: false` response is never retrievable: its row lives only while its turn runs
    # (deleted when it ends), and is as absent as a missing one meanwhile.
    if record is not None and (record.request or {}).get("store") is False:
        return None
    return record


async def find_idempotent(
    session: AsyncSession, *, user_id: int, key: str
) -> ResponseRecord | None:
    return await session.scalar(
        select(ResponseRecord).where(
            ResponseRecord.user_id == user_id, ResponseRecord.idempotency_key == key
        )
    )


async def delete_response(session: AsyncSession, *, response_id: str, user_id: int) -> bool:
    """Delete the API object. The thread's messages stay in the store for audit."""
    if not RESPONSE_ID.fullmatch(response_id):
        return False
    result = await session.execute(
        delete(ResponseRecord).where(
            ResponseRecord.id == response_id, ResponseRecord.user_id == user_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def response_status(session: AsyncSession, *, response_id: str) -> str | None:
    """A response's status as stored (None once deleted): how a running turn learns that it
    was cancelled on another replica."""
    return await session.scalar(
        select(ResponseRecord.status).where(ResponseRecord.id == response_id)
    )


async def set_status(
    session: AsyncSession, *, response_id: str, status: str, **values: Any
) -> bool:
    """Move an open response (queued or in progress) on; a finished or cancelled one stays
    as it is. Returns whether it moved.

    A Core statement on the session's connection, built once for each set of columns `values`
    names: the ORM's bulk-update bookkeeping (finding the row's object in the session to change
    it too) cost more than the UPDATE, and so did building the statement anew each time;
    callers that hold the row's object set it themselves."""
    connection = await session.connection()
    result = await connection.execute(*_status_change(response_id, status, values))
    return bool(result.rowcount)


class ResponseClosed(Exception):
    """The response was no longer open when its turn ended: cancelled, closed by another
    process's sweep, or deleted."""


async def guard_status(
    session: AsyncSession, *, response_id: str, status: str, **values: Any
) -> None:
    """`set_status` for the transaction that stores the response's outcome, as a guard
    (`store.db.execute_guarded`): if the response is no longer open, `ResponseClosed` is
    raised and nothing of the transaction is kept. On SQLite the UPDATE goes to the database
    in the trip of the transaction's next statement or COMMIT, and is checked there."""
    connection = await session.connection()
    statement, parameters = _status_change(response_id, status, values)
    await execute_guarded(
        connection,
        statement,
        parameters,
        expect=1,
        refusal=lambda _: ResponseClosed(response_id),
    )


def guard_status_step(
    direct: DirectWrites, *, response_id: str, status: str, **values: Any
) -> Step:
    """`guard_status` as a step of a direct transaction (`store.direct`)."""
    _, parameters = _status_change(response_id, status, values)
    columns = tuple(sorted(values))
    prepared = direct.prepared(
        ("status", columns), functools.partial(_set_status_statement, columns)
    )
    return step(prepared, parameters, guard=(1, lambda _: ResponseClosed(response_id)))


def _status_change(
    response_id: str, status: str, values: dict[str, Any]
) -> tuple[Update, dict[str, Any]]:
    """The UPDATE moving an open response on, and its parameters."""
    parameters = {"response_id": response_id, "status": status, **values}
    return _set_status_statement(tuple(sorted(values))), parameters


@functools.cache
def _set_status_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(RESPONSES)
        .where(RESPONSES.c.id == bindparam("response_id"), RESPONSES.c.status.in_(OPEN_STATUSES))
        .values({name: bindparam(name) for name in ("status", *columns)})
    )


async def insert_response(session: AsyncSession, record: NewResponse) -> None:
    """A new response's row, from `record` (which stays a plain object for the caller to
    read): one Core INSERT, without the ORM's unit of work around it."""
    connection = await session.connection()
    await connection.execute(_INSERT_RESPONSE, dict(zip(_COLUMNS, _values_of(record), strict=True)))


async def renew_heartbeats(
    session: AsyncSession, *, response_ids: Collection[str], now: datetime
) -> int:
    """Renew the heartbeat of this process's open responses: one UPDATE for all of them (in
    chunks that keep every engine under its bound-parameter limit). Returns how many rows were
    still open."""
    renewed = 0
    ids = list(response_ids)
    for start in range(0, len(ids), HEARTBEAT_CHUNK):
        result = await session.execute(
            update(ResponseRecord)
            .where(
                ResponseRecord.id.in_(ids[start : start + HEARTBEAT_CHUNK]),
                ResponseRecord.status.in_(OPEN_STATUSES),
            )
            .values(heartbeat_at=now)
        )
        renewed += result.rowcount  # type: ignore[attr-defined]
    return renewed


def _orphaned(cutoff: datetime) -> ColumnElement[bool]:
    """Open, and not renewed since `cutoff`; rows from before heartbeats go by their creation."""
    return and_(
        ResponseRecord.status.in_(OPEN_STATUSES),
        or_(
            ResponseRecord.heartbeat_at < cutoff,
            and_(ResponseRecord.heartbeat_at.is_(None), ResponseRecord.created_at < cutoff),
        ),
    )


async def fail_orphans(
    session: AsyncSession,
    *,
    cutoff: datetime,
    error: dict[str, Any],
    running: Collection[str] = (),
    limit: int = 100,
) -> list[str]:
    """Mark `failed` the open responses whose process stopped renewing them before `cutoff`.

    Conditional, so any number of processes may sweep at once, and a response that finished,
    was cancelled or was renewed meanwhile is left as it is. A `store: false` response, which
    nobody can retrieve, is deleted instead, as its turn would have done. Looks first with a
    read, so that a sweep that finds nothing (nearly all of them) takes no write lock.

    Args:
        running: responses the sweeping process runs itself: alive whatever their heartbeat
            says (it may be late only because the store was slow), so never swept by it.

    Returns:
        The ids of the responses this call ended.
    """
    found = await session.scalars(select(ResponseRecord.id).where(_orphaned(cutoff)).limit(limit))
    candidates = [id_ for id_ in found if id_ not in running]
    if not candidates:
        return []
    swept = (
        await session.execute(
            update(ResponseRecord)
            .where(ResponseRecord.id.in_(candidates), _orphaned(cutoff))
            .values(status="failed", error=error, completed_at=utcnow())
            .returning(ResponseRecord.id, ResponseRecord.request)
        )
    ).all()
    unstored = [id_ for id_, request in swept if (request or {}).get("store") is False]
    if unstored:
        await session.execute(delete(ResponseRecord).where(ResponseRecord.id.in_(unstored)))
    return [id_ for id_, _ in swept]
