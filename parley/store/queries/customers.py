"""A batch's accounts, contacts and active conversations, found or created in a few statements
for the whole batch rather than several per message.

Contacts are matched in memory, in the batch's order, by the same rules `_find_contact`
applies one message at a time: by external id, else the user id, else the phone, the oldest
contact first; a contact created or refreshed earlier in the batch is matched by the later
messages as if it had been stored already.
"""

from __future__ import annotations

import functools
from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.direct import DirectWrites
from parley.store.models import (
    ACCOUNTS,
    CONTACTS,
    CONVERSATIONS,
    Account,
    Contact,
    Conversation,
    utcnow,
)
from parley.store.queries.pairs import pair_in, pair_params
from parley.store.queries.upsert import insert_ignore_many

AccountKey = tuple[str, str]
"""(channel, external id)."""

# Core, not the ORM: this path writes many rows and reads none back as objects.
_FIELDS = ("user_id", "phone", "name", "username")
_INDEXED = ("user_id", "phone")
_NEW = 1 << 62
"""Ranks of contacts created in this batch: after every stored id, in creation order, as
their ids will be."""


async def find_accounts(
    session: AsyncSession, keys: Iterable[AccountKey], *, create: bool = True
) -> dict[AccountKey, int]:
    """The ids of the accounts `keys` name; with `create`, the missing ones are created (with
    no settings of their own, as `get_account` does), else left out."""
    wanted = set(keys)
    if not wanted:
        return {}
    found = await _select_accounts(session, wanted)
    missing = wanted - found.keys()
    if missing and create:
        now = utcnow()
        await insert_ignore_many(
            session,
            Account,
            [
                {"channel": c, "external_id": x, "settings": {}, "created_at": now}
                for c, x in sorted(missing)
            ],
            ["channel", "external_id"],
        )
        found |= await _select_accounts(session, missing)
    return found


async def accounts_directly(direct: DirectWrites, keys: set[AccountKey]) -> dict[AccountKey, int]:
    """`find_accounts` without creating any, read on SQLite's line outside a transaction."""
    if not keys:
        return {}
    read = direct.prepared("accounts by key", _accounts_statement)
    rows = await direct.read(read, pair_params(keys))
    return {(channel, external): id_ for channel, external, id_ in rows}


async def _select_accounts(session: AsyncSession, keys: set[AccountKey]) -> dict[AccountKey, int]:
    connection = await session.connection()
    rows = await connection.execute(_accounts_statement(), pair_params(keys))
    return {(channel, external): id_ for channel, external, id_ in rows}


@functools.cache
def _accounts_statement() -> Select[str, str, int]:
    """Built once, as Core on the session's connection: every batch filed reads its accounts,
    and the ORM's execution path cost more than the read (no object is loaded)."""
    columns = ACCOUNTS.c
    return select(columns.channel, columns.external_id, columns.id).where(
        pair_in(columns.channel, columns.external_id)
    )


@dataclass(eq=False)
class _Row:
    """A contact as the batch sees it: stored (`id`) or to be created (`id` None)."""

    rank: int
    account_id: int
    external_id: str
    values: dict[str, str | None]
    id: int | None = None
    stored: dict[str, str | None] = field(default_factory=dict)

    def __lt__(self, other: _Row) -> bool:
        return self.rank < other.rank


class _Matcher:
    """Contacts by the values they are found by, each list oldest first."""

    def __init__(self, rows: Iterable[_Row]) -> None:
        self._by: dict[tuple[int, str, str], list[_Row]] = {}
        self.by_key: dict[tuple[int, str], _Row] = {}
        self.created: list[_Row] = []
        for row in sorted(rows):
            self._add(row)

    def _add(self, row: _Row) -> None:
        insort(self._by.setdefault((row.account_id, "external_id", row.external_id), []), row)
        for name in _INDEXED:
            value = row.values[name]
            if value:
                insort(self._by.setdefault((row.account_id, name, value), []), row)

    def match(self, account_id: int, customer: Any) -> _Row:
        """The contact `customer` is filed under, created (in memory) when none matches, with
        the customer's fields written over its own."""
        key = (account_id, customer.contact_key)
        row = self.by_key.get(key)
        if row is None:
            row = self._find(account_id, customer) or self._create(account_id, customer)
            self.by_key[key] = row
        self._refresh(row, customer)
        return row

    def _find(self, account_id: int, customer: Any) -> _Row | None:
        for name, value in (
            ("external_id", customer.contact_key),
            ("user_id", customer.user_id),
            ("phone", customer.phone),
        ):
            rows = self._by.get((account_id, name, value)) if value else None
            if rows:
                return rows[0]
        return None

    def _create(self, account_id: int, customer: Any) -> _Row:
        row = _Row(
            rank=_NEW + len(self.created),
            account_id=account_id,
            external_id=customer.contact_key,
            values={name: None for name in _FIELDS},
        )
        self.created.append(row)
        self._add(row)
        return row

    def _refresh(self, row: _Row, customer: Any) -> None:
        given = {
            "user_id": customer.user_id,
            "phone": customer.phone,
            "name": customer.contact_name,
            "username": customer.contact_username,
        }
        for name, value in given.items():
            old = row.values[name]
            if not value or value == old:
                continue
            row.values[name] = value
            if name in _INDEXED:
                if old:
                    self._by[(row.account_id, name, old)].remove(row)
                insort(self._by.setdefault((row.account_id, name, value), []), row)


async def find_contacts(
    session: AsyncSession,
    customers: Sequence[tuple[int, Any]],
    candidates: Sequence[Candidate] | None = None,
) -> list[int]:
    """The contact id of each (account id, `Customer`), in order: found, refreshed with what the
    customer now tells (user id, phone, name, username), or created.

    The contacts found are locked (NO KEY UPDATE: enough to serialise writers of a customer,
    without blocking the foreign-key checks of rows that reference it), in id order, so that
    two transactions lock them in the same order. `candidates`: the contacts they may be,
    read already (`candidates_directly`, SQLite), where SQLite's one write lock serialises
    the writers instead.
    """
    if candidates is None:
        candidates = await _candidates(session, customers)
    matcher = _Matcher(candidates)
    rows = [matcher.match(account_id, customer) for account_id, customer in customers]
    await _create(session, matcher.created)
    for row in {id(r): r for r in rows}.values():
        await _write_changes(session, row)
    ids = [row.id for row in rows if row.id is not None]
    assert len(ids) == len(rows)
    return ids


async def _candidates(session: AsyncSession, customers: Sequence[tuple[int, Any]]) -> list[_Row]:
    accounts = {account_id for account_id, _ in customers}
    keys = {c.contact_key for _, c in customers}
    user_ids = {c.user_id for _, c in customers if c.user_id}
    phones = {c.phone for _, c in customers if c.phone}
    found = [Contact.external_id.in_(sorted(keys))]
    if user_ids:
        found.append(Contact.user_id.in_(sorted(user_ids)))
    if phones:
        found.append(Contact.phone.in_(sorted(phones)))
    return await _select_contacts(session, Contact.account_id.in_(sorted(accounts)), or_(*found))


Candidate = _Row
"""A stored contact that a customer may be (by its id, user id or phone)."""


async def candidates_directly(
    direct: DirectWrites, customers: Sequence[tuple[int, Any]]
) -> list[Candidate]:
    """`find_contacts`'s read of the contacts `customers` may be, on SQLite's line outside a
    transaction."""
    user_ids = sorted({c.user_id for _, c in customers if c.user_id})
    phones = sorted({c.phone for _, c in customers if c.phone})
    shape = (bool(user_ids), bool(phones))
    read = direct.prepared(("contact candidates", shape), lambda: _candidates_statement(*shape))
    values: dict[str, Any] = {
        "accounts": sorted({account_id for account_id, _ in customers}),
        "keys": sorted({c.contact_key for _, c in customers}),
        "user_ids": user_ids,
        "phones": phones,
    }
    return [_candidate(*row) for row in await direct.read(read, values)]


def _candidates_statement(user_ids: bool, phones: bool) -> Select[*tuple[Any, ...]]:
    found = [Contact.external_id.in_(bindparam("keys", expanding=True))]
    if user_ids:
        found.append(Contact.user_id.in_(bindparam("user_ids", expanding=True)))
    if phones:
        found.append(Contact.phone.in_(bindparam("phones", expanding=True)))
    return (
        select(*_CANDIDATE_COLUMNS)
        .where(Contact.account_id.in_(bindparam("accounts", expanding=True)), or_(*found))
        .order_by(Contact.id)
    )


def _candidate(id_: int, account_id: int, external_id: str, *values: str | None) -> _Row:
    stored = dict(zip(_FIELDS, values, strict=True))
    return _Row(id_, account_id, external_id, dict(stored), id=id_, stored=stored)


async def _select_contacts(
    session: AsyncSession, *where: Any, params: dict[str, Any] | None = None
) -> list[_Row]:
    result = await session.execute(
        select(*_CANDIDATE_COLUMNS)
        .where(*where)
        .order_by(Contact.id)
        .with_for_update(key_share=True),
        params,
    )
    return [_candidate(*row) for row in result]


_CANDIDATE_COLUMNS = (
    Contact.id,
    Contact.account_id,
    Contact.external_id,
    Contact.user_id,
    Contact.phone,
    Contact.name,
    Contact.username,
)


async def _create(session: AsyncSession, created: list[_Row]) -> None:
    """Insert the contacts the batch created; a concurrent writer's row with the same external
    id wins, and gets the batch's refreshed fields like a contact found."""
    if not created:
        return
    now = utcnow()
    await insert_ignore_many(
        session,
        Contact,
        [
            {
                "account_id": row.account_id,
                "external_id": row.external_id,
                **row.values,
                "created_at": now,
                "updated_at": now,
            }
            for row in created
        ],
        ["account_id", "external_id"],
    )
    keys = [(row.account_id, row.external_id) for row in created]
    stored = {
        (r.account_id, r.external_id): r
        for r in await _select_contacts(
            session, pair_in(Contact.account_id, Contact.external_id), params=pair_params(keys)
        )
    }
    for row in created:
        found = stored[(row.account_id, row.external_id)]
        row.id, row.stored = found.id, found.stored


async def _write_changes(session: AsyncSession, row: _Row) -> None:
    changed = {
        name: value
        for name, value in row.values.items()
        if value is not None and value != row.stored[name]
    }
    if changed:
        await session.execute(
            update(CONTACTS).where(CONTACTS.c.id == row.id).values(**changed, updated_at=utcnow())
        )
        row.stored.update(changed)


async def active_conversations(
    session: AsyncSession,
    contacts: dict[int, tuple[int, str]],
    known: dict[int, int] | None = None,
) -> dict[int, int]:
    """The id of each contact's active conversation (the latest not closed), created where it
    has none.

    Args:
        contacts: (account id, channel) by contact id.
        known: active conversations by contact id, read already (`conversations_directly`):
            only the contacts not among them are looked up.
    """
    if not contacts:
        return {}
    found = {c: known[c] for c in contacts if c in known} if known else {}
    unknown = sorted(c for c in contacts if c not in found)
    if unknown:
        rows = await session.execute(_ACTIVE, {"contacts": unknown})
        for contact_id, conversation_id in rows:
            found.setdefault(contact_id, conversation_id)
    missing = [c for c in contacts if c not in found]
    if missing:
        now = utcnow()
        created = await session.execute(
            insert(CONVERSATIONS).returning(CONVERSATIONS.c.contact_id, CONVERSATIONS.c.id),
            [
                {
                    "account_id": contacts[c][0],
                    "contact_id": c,
                    "channel": contacts[c][1],
                    "created_at": now,
                    "updated_at": now,
                    "last_message_at": now,
                }
                for c in missing
            ],
        )
        found.update({contact_id: id_ for contact_id, id_ in created})
    return found


async def conversations_directly(direct: DirectWrites, contact_ids: set[int]) -> dict[int, int]:
    """`active_conversations`'s read, on SQLite's line outside a transaction: each contact's
    latest conversation not closed, for those that have one."""
    if not contact_ids:
        return {}
    found: dict[int, int] = {}
    read = direct.prepared("active conversations", lambda: _ACTIVE)
    for contact_id, conversation_id in await direct.read(read, {"contacts": sorted(contact_ids)}):
        found.setdefault(contact_id, conversation_id)
    return found


_ACTIVE = (
    select(Conversation.contact_id, Conversation.id)
    .where(
        Conversation.contact_id.in_(bindparam("contacts", expanding=True)),
        Conversation.status != "closed",
    )
    .order_by(Conversation.id.desc())
)
