"""A Responses API thread started with its first response: both rows in one transaction, the
response in the conversation just made, on either backend; on SQLite in one trip."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.direct import DirectWrites
from parley.store.models import Conversation, NewResponse, ResponseRecord, utcnow
from parley.store.queries.responses import api_parties, new_thread, open_thread
from parley.store.queries.users import create_user


def _response(user_id: int, id_: str, *, key: str | None = None) -> NewResponse:
    now = utcnow()
    return NewResponse(
        id=id_, user_id=user_id, conversation_id=None, previous_response_id=None,
        status="in_progress", profile="default", request={"input": "hi"}, output=[], meta={},
        background=False, idempotency_key=key, request_hash="h", created_at=now,
        heartbeat_at=now,
    )  # fmt: skip


async def test_a_thread_opens_with_its_response_in_it(
    session: AsyncSession, backend: str, trips: list[str], direct: DirectWrites | None
) -> None:
    user, _ = await create_user(session, name="ana")
    account, contact = await api_parties(session, user_id=user.id, user_name="ana")
    # Another conversation made on the connection first: the response must not land in it.
    before = await new_thread(session, account=account, contact=contact, profile="default")
    await session.commit()
    trips.clear()

    response = _response(user.id, "resp_1")
    thread = await open_thread(
        session,
        account=account,
        contact=contact,
        profile="sales",
        response=response,
        direct=direct,
    )
    # Sent directly, the rows are committed already and the session never began.
    assert session.in_transaction() is (direct is None)
    await session.commit()

    if backend == "sqlite":
        assert trips == ["run_trip"]  # BEGIN, both INSERTs and the COMMIT
    assert thread.conversation.id != before.conversation.id
    assert response.conversation_id == thread.conversation.id
    assert (thread.conversation.channel, thread.conversation.profile) == ("api", "sales")
    assert thread.conversation.prompt_version_id is None
    stored = await session.get(ResponseRecord, "resp_1")
    assert stored is not None and stored.conversation_id == thread.conversation.id
    conversation = await session.get(Conversation, thread.conversation.id)
    assert conversation is not None
    assert (conversation.account_id, conversation.contact_id) == (account.id, contact.id)
    assert conversation.profile == "sales"


async def test_a_thread_whose_response_is_refused_is_not_stored_either(
    session: AsyncSession, direct: DirectWrites | None
) -> None:
    user, _ = await create_user(session, name="ana")
    account, contact = await api_parties(session, user_id=user.id, user_name="ana")
    first = _response(user.id, "resp_1", key="k")
    await open_thread(
        session,
        account=account,
        contact=contact,
        profile="default",
        response=first,
        direct=direct,
    )
    await session.commit()

    with pytest.raises(IntegrityError):  # the same Idempotency-Key again
        await open_thread(
            session,
            account=account,
            contact=contact,
            profile="default",
            response=_response(user.id, "resp_2", key="k"),
            direct=direct,
        )
        await session.commit()
    await session.rollback()

    conversations = await session.scalars(select(Conversation.id))
    assert list(conversations) == [first.conversation_id]
    assert await session.get(ResponseRecord, "resp_2") is None
