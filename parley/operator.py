"""What an operator does to a conversation, the same from the admin API and the console: take
it over, answer as a person, hand it back, answer a failed message again. Each action commits
its change and then wakes whoever acts on it (the outbox drain, the queue), so that a door only
maps the outcome to its own answer.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from parley.channels.render import render_text
from parley.observability.metrics import count_handoff
from parley.runtime import Runtime
from parley.store.queries.handoff import ModeChange, hand_back, hand_to_human, record_operator_reply
from parley.store.queries.turns import retry_message


async def take_over(
    session: AsyncSession, runtime: Runtime, *, conversation_id: int, operator: str, reason: str
) -> ModeChange:
    """A person answers from now on; the agent's replies not yet sent are withdrawn.

    Raises:
        ConversationNotFound: no such conversation.
    """
    change = await hand_to_human(
        session,
        conversation_id=conversation_id,
        assignee=operator,
        reason=reason,
        notify=runtime.settings.parley_handoff_webhook_url is not None,
    )
    await session.commit()
    if change.changed:
        count_handoff("operator")
    return change


async def reply(
    session: AsyncSession,
    runtime: Runtime,
    *,
    conversation_id: int,
    channel: str,
    operator: str,
    text: str,
) -> list[int]:
    """Queue `text` in the outbox as the channel sends it (split within its limit, formatted)
    and wake the drain; returns the stored messages' ids, none when `text` renders to nothing.

    Raises:
        ConversationNotFound: no such conversation.
        ConversationModeConflict: the agent has the conversation.
    """
    parts = render_text(channel, text)
    if not parts:
        return []
    ids = await record_operator_reply(
        session, conversation_id=conversation_id, operator=operator, parts=parts
    )
    await session.commit()
    runtime.deliverer.wake()
    return ids


async def give_back(
    session: AsyncSession,
    runtime: Runtime,
    *,
    conversation_id: int,
    operator: str,
    answer_pending: bool,
) -> ModeChange:
    """The agent answers again; with `answer_pending`, what nobody answered too (signalled).

    Raises:
        ConversationNotFound: no such conversation.
        ConversationModeConflict: the agent has it already.
    """
    change = await hand_back(
        session, conversation_id=conversation_id, by=operator, answer_pending=answer_pending
    )
    await session.commit()
    if answer_pending and change.pending:
        await runtime.queue.signal(conversation_id)
    return change


async def retry(session: AsyncSession, runtime: Runtime, *, message_id: int) -> int | None:
    """Put a failed inbound message back in line and signal its conversation; returns the
    conversation's id, or None when there is no such failed message."""
    conversation_id = await retry_message(session, message_id=message_id)
    if conversation_id is None:
        return None
    await session.commit()
    await runtime.queue.signal(conversation_id)
    return conversation_id
