"""Recording what customers send and what the channel reports about what Parley sent."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Integer, Select, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.dml import ReturningUpdate, Update
from sqlalchemy.sql.elements import ColumnElement

from parley.channels.base import InboundMessage
from parley.channels.media import media_to_stored
from parley.errors import ConversationGone, LeaseLost, ParleyError
from parley.store.db import execute_guarded
from parley.store.direct import DirectWrites, Stale
from parley.store.models import (
    CONVERSATIONS,
    MESSAGES,
    Account,
    Contact,
    Conversation,
    Message,
    utcnow,
)
from parley.store.queries.customers import (
    AccountKey,
    Candidate,
    accounts_directly,
    active_conversations,
    candidates_directly,
    conversations_directly,
    find_accounts,
    find_contacts,
)
from parley.store.queries.pairs import pair_in, pair_params
from parley.store.queries.upsert import insert_ignore, insert_ignore_many


class Customer(Protocol):
    """Who a contact is found or created by: an `InboundMessage`, or the customer an event
    names."""

    @property
    def contact_key(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def contact_name(self) -> str | None: ...
    @property
    def contact_username(self) -> str | None: ...


@dataclass
class _BatchCache:
    """Rows already looked up in this batch: a POST often carries one customer many times."""

    accounts: dict[tuple[str, str], Account] = field(default_factory=dict)
    contacts: dict[tuple[int, str], Contact] = field(default_factory=dict)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    notify_handoffs: bool = False
    """Whether a handoff filed in this batch owes PARLEY_HANDOFF_WEBHOOK_URL a notice."""


@dataclass(frozen=True, slots=True)
class InboundLookup:
    """What `record_inbound` reads before it writes, read ahead of its transaction on SQLite
    (`look_up_inbound`): the accounts the messages name that exist, which of the messages are
    stored already, the contacts the others' customers may be, and those contacts' active
    conversations."""

    accounts: dict[AccountKey, int]
    known: frozenset[tuple[int, str]]
    candidates: list[Candidate] = field(default_factory=list)
    conversations: dict[int, int] = field(default_factory=dict)


async def look_up_inbound(direct: DirectWrites, messages: list[InboundMessage]) -> InboundLookup:
    """`record_inbound`'s reads, made on SQLite's line before its transaction: each statement
    taken out of the transaction is one trip less during which every other writer of the file,
    the door's acknowledgements included, waits. For a customer already known, with a
    conversation open, the transaction then reads nothing.

    What they read stays true until the transaction commits, or the transaction keeps
    nothing (`Stale`):
    - only the filer, one at a time, stores customers' messages and creates contacts, and an
      account is never deleted (one missing here is created in the transaction);
    - a conversation closed or deleted meanwhile refuses the messages' sequence numbers;
    - an erasure deletes the inbox rows that name its customer, which refuses their removal
      (`remove`)."""
    accounts = await accounts_directly(
        direct, {(m.channel, m.account_external_id) for m in messages}
    )
    named = [
        (accounts[(m.channel, m.account_external_id)], m)
        for m in messages
        if (m.channel, m.account_external_id) in accounts
    ]
    keys = {(account_id, m.channel_message_id) for account_id, m in named}
    known: frozenset[tuple[int, str]] = frozenset()
    if keys:
        read = direct.prepared("messages known", _known_statement)
        rows = await direct.read(read, pair_params(keys))
        known = frozenset((account_id, mid or "") for account_id, mid in rows)
    customers = [(a, m) for a, m in named if (a, m.channel_message_id) not in known]
    if not customers:
        return InboundLookup(accounts, known)
    candidates = await candidates_directly(direct, customers)
    conversations = await conversations_directly(
        direct, {c.id for c in candidates if c.id is not None}
    )
    return InboundLookup(accounts, known, candidates, conversations)


@dataclass(frozen=True, slots=True)
class Stored:
    """A message `record_inbound` stored (not one it had already): what `webhook.accepted`
    says about it once the batch commits."""

    message: InboundMessage
    account_id: int
    conversation_id: int
    correlation_id: str = ""


async def record_inbound(
    session: AsyncSession,
    *,
    messages: list[InboundMessage],
    correlation_id: str | Sequence[str],
    stored: list[Stored] | None = None,
    looked_up: InboundLookup | None = None,
) -> list[int]:
    """Store new inbound messages; ones already stored (Meta re-delivers) are skipped.

    A handful of statements for the whole batch, not several per message (on SQLite each is a
    trip to the connection's thread while the file's one writer lock is held).

    Args:
        correlation_id: the webhook's, or one per message when they came in several.
        stored: collects the messages stored here, when given.
        looked_up: the reads `look_up_inbound` made before the transaction, for messages
            these are among.

    Returns:
        The ids of the conversations that now have messages waiting for an answer.
    """
    # Matched and numbered in the order they were sent: a customer's messages keep it even when
    # the key they are filed under changes in the batch (a BSUID appearing); the rows are locked
    # in one order for every writer all the same (see `find_contacts`, `_insert_messages`).
    keys = {(m.channel, m.account_external_id) for m in messages}
    if looked_up is not None and not keys <= looked_up.accounts.keys():
        looked_up = None  # an account to create: all looked up (and created) here
    if looked_up is not None:
        accounts = {key: looked_up.accounts[key] for key in keys}
    else:
        accounts = await find_accounts(session, keys)
    if isinstance(correlation_id, str):
        correlation_id = [correlation_id] * len(messages)
    fresh = await _fresh(
        session,
        accounts,
        list(zip(messages, correlation_id, strict=True)),
        known=looked_up.known if looked_up is not None else None,
    )
    if not fresh:
        return []
    contacts = await find_contacts(
        session,
        [(a, m) for a, m, _ in fresh],
        candidates=looked_up.candidates if looked_up is not None else None,
    )
    conversations = await active_conversations(
        session,
        {c: (a, m.channel) for c, (a, m, _) in zip(contacts, fresh, strict=True)},
        known=looked_up.conversations if looked_up is not None else None,
    )
    filed = [
        _Filed(account_id, conversations[contact_id], message, correlation)
        for contact_id, (account_id, message, correlation) in zip(contacts, fresh, strict=True)
    ]
    new = await _insert_messages(session, filed, read_before=looked_up is not None)
    waiting: list[int] = []
    for one in filed:
        account_id, conversation_id, message = one.account_id, one.conversation_id, one.message
        if (account_id, message.channel_message_id) not in new:
            continue  # stored meanwhile by another writer
        if stored is not None:
            stored.append(Stored(message, account_id, conversation_id, one.correlation_id))
        if message.needs_reply and conversation_id not in waiting:
            waiting.append(conversation_id)
    return waiting


@dataclass(frozen=True, slots=True)
class _Filed:
    account_id: int
    conversation_id: int
    message: InboundMessage
    correlation_id: str


async def _fresh(
    session: AsyncSession,
    accounts: dict[AccountKey, int],
    messages: list[tuple[InboundMessage, str]],
    *,
    known: frozenset[tuple[int, str]] | None = None,
) -> list[tuple[int, InboundMessage, str]]:
    """The messages not stored yet, each once, with their account's id and correlation id;
    `known`: the stored ones among them, read already (`look_up_inbound`)."""
    named = [(accounts[(m.channel, m.account_external_id)], m, c) for m, c in messages]
    keys = {(a, m.channel_message_id) for a, m, _ in named}
    seen = set(known & keys) if known is not None else await _known_message_ids(session, keys)
    fresh = []
    for account_id, message, correlation_id in named:
        key = (account_id, message.channel_message_id)
        if key not in seen:
            seen.add(key)
            fresh.append((account_id, message, correlation_id))
    return fresh


async def _known_message_ids(
    session: AsyncSession, keys: set[tuple[int, str]]
) -> set[tuple[int, str]]:
    if not keys:
        return set()
    rows = await session.execute(_known_statement(), pair_params(keys))
    return {(account_id, mid or "") for account_id, mid in rows}


@functools.cache
def _known_statement() -> Select[int, str | None]:
    """Built once: every batch of messages filed is checked against those stored."""
    return select(Message.account_id, Message.channel_message_id).where(
        pair_in(Message.account_id, Message.channel_message_id)
    )


_NOT_CLOSED = CONVERSATIONS.c.status != "closed"
"""The condition on a conversation read before the transaction that files into it."""


async def _insert_messages(
    session: AsyncSession, filed: list[_Filed], *, read_before: bool = False
) -> set[tuple[int, str]]:
    """Insert `filed`, numbered in order per conversation; returns the (account id, channel id)
    of those inserted. `read_before`: their conversations were read before the transaction,
    and one closed or deleted since refuses them all (`Stale`)."""
    counts: dict[int, int] = {}
    lock_order: dict[int, tuple[str, str, str]] = {}
    for one in filed:
        conversation_id, message = one.conversation_id, one.message
        counts[conversation_id] = counts.get(conversation_id, 0) + 1
        key = (message.channel, message.account_external_id, message.contact_key)
        lock_order[conversation_id] = min(key, lock_order.get(conversation_id, key))
    # One UPDATE per conversation (see `allocate_sequence`), in the writers' lock order (by
    # channel, account and customer), so that two batches naming the same customers cannot
    # deadlock on PostgreSQL. Nothing reads the numbers back: each row takes its own from the
    # counter in SQL (`reserved_sequence_no`), so on SQLite the UPDATEs ride with the INSERT's
    # trip instead of one trip each.
    try:
        for conversation_id in sorted(counts, key=lock_order.__getitem__):
            await reserve_sequence(
                session,
                conversation_id=conversation_id,
                count=counts[conversation_id],
                only_if=_NOT_CLOSED if read_before else None,
                hold=True,
            )
        now = utcnow()
        offsets: dict[int, int] = {}
        rows = []
        for one in filed:
            offset = offsets.get(one.conversation_id, 0)
            offsets[one.conversation_id] = offset + 1
            message = one.message
            rows.append(
                {
                    "conversation_id": one.conversation_id,
                    "account_id": one.account_id,
                    "thread_id": one.conversation_id,
                    "count": counts[one.conversation_id],
                    "offset": offset,
                    "direction": "in",
                    "sender": "customer",
                    "kind": message.kind,
                    "text": message.text,
                    "payload": message.payload,
                    "channel_message_id": message.channel_message_id,
                    "status": "received" if message.needs_reply else "ignored",
                    "meta": _inbound_meta(message, one.correlation_id),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        table = MESSAGES
        inserted = await insert_ignore_many(
            session,
            Message,
            rows,
            ["account_id", "channel_message_id"],
            returning=[table.c.account_id, table.c.channel_message_id],
            values=_NUMBERED,
        )
    except SequenceRefused as refused:
        if read_before:
            why = f"conversation {refused.args[0]} closed or gone since it was read"
            raise Stale(why) from None
        # No condition: only a conversation deleted meanwhile.
        raise ConversationGone(f"conversation {refused.args[0]} no longer exists") from None
    return {(row[0], row[1]) for row in inserted}


async def get_account(session: AsyncSession, *, channel: str, external_id: str) -> Account:
    """The account row for a channel's business id, created on first sight.

    A new number's row has no settings of its own, so it is served with the environment's
    defaults: a single business needs no setup beyond the environment.
    """
    query = select(Account).where(Account.channel == channel, Account.external_id == external_id)
    account = await session.scalar(query)
    if account is None:
        await insert_ignore(
            session,
            Account,
            {
                "channel": channel,
                "external_id": external_id,
                "settings": {},
                "created_at": utcnow(),
            },
            ["channel", "external_id"],
        )
        account = await session.scalar(query)
    assert account is not None
    return account


async def _account(
    session: AsyncSession, cache: _BatchCache, channel: str, external_id: str
) -> Account:
    key = (channel, external_id)
    if key not in cache.accounts:
        cache.accounts[key] = await get_account(session, channel=channel, external_id=external_id)
    return cache.accounts[key]


async def _contact(
    session: AsyncSession, cache: _BatchCache, account: Account, message: Customer
) -> Contact:
    key = (account.id, message.contact_key)
    contact = cache.contacts.get(key)
    if contact is None:
        contact = await _find_contact(session, account.id, message)
        if contact is None:
            await insert_ignore(
                session,
                Contact,
                {
                    "account_id": account.id,
                    "external_id": message.contact_key,
                    "user_id": message.user_id,
                    "phone": message.phone,
                    "name": message.contact_name,
                    "username": message.contact_username,
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                },
                ["account_id", "external_id"],
            )
            contact = await _find_contact(session, account.id, message)
            assert contact is not None
        cache.contacts[key] = contact
    _refresh_contact(contact, message)
    return contact


async def _find_contact(
    session: AsyncSession, account_id: int, message: Customer
) -> Contact | None:
    """By the stable user id first, then the phone: WhatsApp's 2026 BSUIDs arrive for customers
    first known by phone number, and a customer with a username may have no phone at all."""
    candidates: list[tuple[InstrumentedAttribute[str | None] | InstrumentedAttribute[str], str]]
    candidates = [(Contact.external_id, message.contact_key)]
    if message.user_id:
        candidates.append((Contact.user_id, message.user_id))
    if message.phone:
        candidates.append((Contact.phone, message.phone))
    for column, value in candidates:
        contact = await session.scalar(
            select(Contact)
            .where(Contact.account_id == account_id, column == value)
            .order_by(Contact.id)
            .limit(1)
            # NO KEY UPDATE: enough to serialise writers of this customer, and it does not block
            # the foreign-key checks of rows that reference the contact.
            .with_for_update(key_share=True)
            # `record_inbound` writes contacts with Core statements, which leave a contact
            # loaded earlier in the transaction as it was.
            .execution_options(populate_existing=True)
        )
        if contact is not None:
            return contact
    return None


def _refresh_contact(contact: Contact, message: Customer) -> None:
    if message.user_id and contact.user_id != message.user_id:
        contact.user_id = message.user_id
    if message.phone and contact.phone != message.phone:
        contact.phone = message.phone
    if message.contact_name and contact.name != message.contact_name:
        contact.name = message.contact_name
    if message.contact_username and contact.username != message.contact_username:
        contact.username = message.contact_username


async def _active_conversation(
    session: AsyncSession, cache: _BatchCache, account: Account, contact: Contact
) -> Conversation:
    conversation = cache.conversations.get(contact.id)
    if conversation is None:
        conversation = await session.scalar(
            select(Conversation)
            .where(Conversation.contact_id == contact.id, Conversation.status != "closed")
            .order_by(Conversation.id.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        if conversation is None:
            conversation = Conversation(
                account_id=account.id, contact_id=contact.id, channel=account.channel
            )
            session.add(conversation)
            await session.flush()
        cache.conversations[contact.id] = conversation
    return conversation


async def allocate_sequence(
    session: AsyncSession,
    *,
    conversation_id: int,
    count: int = 1,
    only_if: ColumnElement[bool] | None = None,
    **also: object,
) -> int:
    """Reserve `count` sequence numbers; returns the first. `also` sets other columns of the
    conversation in the same statement; `only_if` is a condition on the conversation without
    which nothing is reserved (`LeaseLost`: the turn's answer is no longer wanted), written on
    the table's columns and built once (a module's constant: the statement is kept for each).

    The UPDATE also locks the conversation row on PostgreSQL until commit, so two writers to one
    conversation queue here instead of colliding on the unique (conversation, sequence_no). Do
    not update the row a second time in the same transaction: PostgreSQL then re-checks its
    foreign keys (the row is our own), taking share locks on the contact and account rows that
    a webhook may hold, and the two deadlock.

    A Core statement built once per shape of call (which columns `also` sets, which condition),
    on the session's connection: every stored message runs it, and the ORM's UPDATE spent more
    on building and bookkeeping than the database on the row. What the ORM's would also do is
    done here: pending changes are flushed first (so row locks are taken in the same order;
    a no-op when there are none), and the conversation's object, when the session holds it,
    learns the new values.

    Raises:
        ConversationGone: the conversation was deleted meanwhile (retention, an erasure).
    """
    await session.flush()
    now = utcnow()
    values = {"last_message_at": now, "updated_at": now, **also}
    connection = await session.connection()
    result = await connection.execute(
        _allocate_statement(tuple(sorted(also)), only_if),
        {"conversation_id": conversation_id, "count": count, **values},
    )
    reserved = result.scalar_one_or_none()
    if reserved is None:
        raise await _why_not(session, conversation_id)
    loaded = session.identity_map.get(identity_key(Conversation, conversation_id))
    if loaded is not None:
        for name, value in {"next_sequence_no": reserved, **values}.items():
            set_committed_value(loaded, name, value)
    return int(reserved) - count


class SequenceRefused(Exception):
    """`reserve_sequence` found no conversation to take the numbers: it is gone, or its
    `only_if` no longer holds."""


async def reserve_sequence(
    session: AsyncSession,
    *,
    conversation_id: int,
    count: int,
    only_if: ColumnElement[bool] | None = None,
    hold: bool = False,
    **also: object,
) -> None:
    """`allocate_sequence` for a writer that does not read the numbers back: its INSERTs take
    them in SQL from the conversation's counter (`reserved_sequence_no`), so on SQLite, with
    `hold`, the UPDATE goes to the database in the trip of the transaction's next statement
    or COMMIT (`store.db.execute_guarded`) instead of a trip of its own for the numbers.

    Raises:
        SequenceRefused: the conversation is gone or `only_if` no longer holds (with `hold`
            on SQLite, from the trip that carries the UPDATE; the transaction is then rolled
            back). Which of the two, `refused_why` tells after the rollback.
    """
    await session.flush()
    now = utcnow()
    values = {"last_message_at": now, "updated_at": now, **also}
    connection = await session.connection()
    await execute_guarded(
        connection,
        reserve_statement(tuple(sorted(also)), only_if),
        {"conversation_id": conversation_id, "count": count, **values},
        expect=1,
        refusal=lambda _: SequenceRefused(conversation_id),
        hold=hold,
    )
    loaded = session.identity_map.get(identity_key(Conversation, conversation_id))
    if loaded is not None:  # its counter is not known here: read afresh on the next load
        session.expire(loaded, ["next_sequence_no"])
        for name, value in values.items():
            set_committed_value(loaded, name, value)


def reserved_sequence_no(offset: ColumnElement[int]) -> ColumnElement[int]:
    """The sequence number `offset` (from 0) among the `count` that `reserve_sequence` has
    just reserved in the conversation `thread_id`, read from its counter in the same
    transaction: for the INSERTs that follow it."""
    counter = (
        select(CONVERSATIONS.c.next_sequence_no)
        .where(CONVERSATIONS.c.id == bindparam("thread_id", type_=Integer))
        .scalar_subquery()
    )
    return counter - bindparam("count", type_=Integer) + offset


_NUMBERED = {"sequence_no": reserved_sequence_no(bindparam("offset", type_=Integer))}
"""Each inbound row's number, built once: `insert_ignore_many` keeps its statements by the
expressions they are given."""


async def refused_why(session: AsyncSession, refused: SequenceRefused) -> ParleyError:
    """What a `SequenceRefused` meant, asked after its transaction was rolled back."""
    return await _why_not(session, refused.args[0])


async def _why_not(session: AsyncSession, conversation_id: int) -> ParleyError:
    """Why a conversation took no sequence numbers: gone, or no longer the turn's to answer."""
    found = await session.scalar(select(Conversation.id).where(Conversation.id == conversation_id))
    if found is None:
        return ConversationGone(f"conversation {conversation_id} no longer exists")
    return LeaseLost(f"conversation {conversation_id} no longer takes this answer")


@functools.cache
def reserve_statement(also: tuple[str, ...], only_if: ColumnElement[bool] | None) -> Update:
    """The UPDATE of `reserve_sequence` that sets `also` too, under `only_if`."""
    table = CONVERSATIONS
    statement = update(table).where(table.c.id == bindparam("conversation_id"))
    if only_if is not None:
        statement = statement.where(only_if)
    columns = ("last_message_at", "updated_at", *also)
    return statement.values(
        {
            "next_sequence_no": table.c.next_sequence_no + bindparam("count"),
            **{name: bindparam(name) for name in columns},
        }
    )


@functools.cache
def _allocate_statement(
    also: tuple[str, ...], only_if: ColumnElement[bool] | None
) -> ReturningUpdate[int]:
    """The UPDATE … RETURNING of `allocate_sequence` that sets `also` too, under `only_if`."""
    return reserve_statement(also, only_if).returning(CONVERSATIONS.c.next_sequence_no)


def _inbound_meta(message: InboundMessage, correlation_id: str) -> dict[str, object]:
    meta: dict[str, object] = {
        "correlation_id": correlation_id,
        "sent_at": message.timestamp.isoformat(),
    }
    if message.reply_to:
        meta["reply_to_channel_id"] = message.reply_to
    if message.media:
        # The neutral facts a turn downloads the files by (the payload is the channel's own).
        meta["media"] = [media_to_stored(m) for m in message.media]
    return meta
