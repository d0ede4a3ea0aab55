"""Configured accounts in the store, on both backends: secrets encrypted at rest and shown only
as fingerprints, removal that keeps the history, and who may be answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import (
    AccountConflict,
    AccountInvalid,
    AccountNotFound,
    SecretsDisabled,
)
from parley.store.crypto import SecretBox
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.models import Account, Conversation, Message
from parley.store.queries import accounts as queries
from parley.store.queries.account_directory import (
    DISABLED,
    NOT_CONFIGURED,
    REMOVED,
    AccountDirectory,
)
from parley.store.queries.accounts import AccountFields
from parley.store.queries.inbound import record_inbound
from tests.factories import PHONE_NUMBER_ID, inbound_text

BOX = SecretBox("store-test-key")
CHANNELS = ["whatsapp"]
TOKEN = "EAAG-token-of-the-first-shop"
APP_SECRET = "app-secret-of-the-first-shop"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def add(
    sessions: async_sessionmaker[AsyncSession],
    external_id: str,
    box: SecretBox | None = BOX,
    **values: object,
) -> Account:
    async with sessions() as session:
        account, _ = await queries.add_account(
            session,
            channel="whatsapp",
            external_id=external_id,
            values=AccountFields(**values),  # type: ignore[arg-type]
            box=box,
            channels=CHANNELS,
        )
        await session.commit()
        return account


async def test_secrets_are_encrypted_at_rest_and_shown_only_as_fingerprints(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await add(sessions, "1001", access_token=TOKEN, app_secret=APP_SECRET, name="Shop")
    async with sessions() as session:
        raw = (
            await session.execute(
                text("SELECT access_token, app_secret FROM accounts WHERE id = :id"),
                {"id": account.id},
            )
        ).one()
    assert raw[0] and raw[1]
    assert TOKEN not in raw[0] and APP_SECRET not in raw[1]
    assert BOX.decrypt(raw[0]) == TOKEN

    view = queries.describe(account, BOX)
    assert view.access_token.set and view.access_token.fingerprint == BOX.fingerprint(TOKEN)
    assert view.verify_token.set is False and view.verify_token.fingerprint is None
    assert TOKEN not in repr(view) and APP_SECRET not in repr(view)
    assert TOKEN not in repr(AccountFields(access_token=TOKEN))
    # Another key cannot read it, and says so rather than failing.
    other = queries.describe(account, SecretBox("another-key"))
    assert other.access_token.set and not other.access_token.readable


async def test_a_secret_without_a_key_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(SecretsDisabled, match="PARLEY_SECRET_KEY"):
        await add(sessions, "1002", box=None, access_token=TOKEN)
    # Without secrets, an account needs no key.
    account = await add(sessions, "1002", box=None, name="No secrets")
    assert account.configured and account.access_token is None


async def test_add_refuses_duplicates_and_bad_fields(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add(sessions, "1003")
    with pytest.raises(AccountConflict, match="already exists"):
        await add(sessions, "1003")
    with pytest.raises(AccountInvalid, match="unknown channel"):
        async with sessions() as session:
            await queries.add_account(
                session,
                channel="telegram",
                external_id="1",
                values=AccountFields(),
                box=BOX,
                channels=CHANNELS,
            )
    for bad in (
        {"send_rate": 0.0},
        {"profile": "no spaces"},
        {"access_token": " padded "},
        {"access_token": ""},
    ):
        with pytest.raises(AccountInvalid):
            await add(sessions, "1004", **bad)
    with pytest.raises(AccountInvalid, match="account id"):
        await add(sessions, "has:colon")


async def test_adding_a_number_already_seen_keeps_its_conversations(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await record_inbound(
            session, messages=[inbound_text("wamid.seen", phone="34600")], correlation_id="c"
        )
        await session.commit()
    account = await add(sessions, PHONE_NUMBER_ID, name="Adopted")
    async with sessions() as session:
        owners = await session.scalars(select(Conversation.account_id))
        assert list(owners) == [account.id]
        assert await session.scalar(select(func.count()).select_from(Account)) == 1


async def test_update_changes_what_is_given_and_clears_with_none(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await add(sessions, "1005", access_token=TOKEN, name="Before", profile="sales")
    async with sessions() as session:
        found = await queries.find_account(session, ref="whatsapp:1005")
        await queries.update_account(
            session,
            account=found,
            values=AccountFields(name="After", access_token=None, send_rate=20.0),
            box=BOX,
        )
        await session.commit()
    async with sessions() as session:
        row = await session.get(Account, account.id)
    assert row is not None
    assert (row.name, row.profile, row.send_rate, row.access_token) == ("After", "sales", 20, None)


async def test_remove_keeps_the_history_and_erases_the_credentials(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await add(sessions, PHONE_NUMBER_ID, access_token=TOKEN, app_secret=APP_SECRET)
    async with sessions() as session:
        await record_inbound(
            session, messages=[inbound_text("wamid.kept", phone="34601")], correlation_id="c"
        )
        await queries.remove_account(
            session, account=await queries.find_account(session, ref=PHONE_NUMBER_ID)
        )
        await session.commit()
    async with sessions() as session:
        row = await session.get(Account, account.id)
        assert row is not None and row.removed_at is not None
        assert (row.access_token, row.app_secret) == (None, None)
        assert await session.scalar(select(func.count()).select_from(Message)) == 1
        assert await queries.list_accounts(session) == []
        listed = await queries.list_accounts(session, include_removed=True)
        assert [a.id for a in listed] == [account.id]
        with pytest.raises(AccountNotFound, match="removed"):
            await queries.remove_account(session, account=row)
    # Added again, it is the same account, with its conversations.
    again = await add(sessions, PHONE_NUMBER_ID)
    assert again.id == account.id and again.removed_at is None


async def test_find_by_channel_id_own_id_or_channel_prefix(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    account = await add(sessions, "555000")
    async with sessions() as session:
        for ref in ("555000", "whatsapp:555000", str(account.id)):
            assert (await queries.find_account(session, ref=ref)).id == account.id
        with pytest.raises(AccountNotFound):
            await queries.find_account(session, ref="999999")
        with pytest.raises(AccountNotFound):
            await queries.find_account(session, ref="instagram:555000")


async def test_who_is_answered(sessions: async_sessionmaker[AsyncSession]) -> None:
    directory = AccountDirectory(sessions, BOX, ttl=0)
    async with sessions() as session:
        await record_inbound(
            session,
            messages=[inbound_text("wamid.a", phone="34602")],
            correlation_id="c",
        )
        await session.commit()
        stranger = await session.scalar(select(Account))
    assert stranger is not None
    # No configured account: the environment serves every number (one business).
    assert await directory.refusal(stranger) is None

    shop = await add(sessions, "2001", access_token=TOKEN, app_secret=APP_SECRET)
    assert await directory.refusal(stranger) == NOT_CONFIGURED
    assert await directory.refusal(shop) is None
    assert directory.access_token(shop) == TOKEN
    snapshot = await directory.snapshot()
    assert snapshot.app_secrets("whatsapp") == [APP_SECRET]
    assert snapshot.lookup("whatsapp", PHONE_NUMBER_ID) is None

    async with sessions() as session:
        row = await session.get(Account, shop.id)
        assert row is not None
        await queries.update_account(
            session, account=row, values=AccountFields(enabled=False), box=BOX
        )
        await session.commit()
    assert await directory.refusal(row) == DISABLED
    # A disabled account still counts as configured: strangers stay unanswered.
    assert await directory.refusal(stranger) == NOT_CONFIGURED

    async with sessions() as session:
        row = await session.get(Account, shop.id)
        assert row is not None
        await queries.remove_account(session, account=row)
        await session.commit()
    assert await directory.refusal(row) == REMOVED
    # With no configured account left, the environment serves again.
    assert await directory.refusal(stranger) is None
    assert (await directory.snapshot()).app_secrets("whatsapp") == []


async def test_the_directory_remembers_until_a_change_is_committed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = [0.0]
    directory = AccountDirectory(sessions, BOX, ttl=60, clock=lambda: now[0])
    first = await directory.snapshot()
    assert await directory.snapshot() is first  # no query while fresh
    await add(sessions, "3001", app_secret=APP_SECRET)
    # A change committed in this process is seen at once.
    assert (await directory.snapshot()).app_secrets("whatsapp") == [APP_SECRET]
    cached = await directory.snapshot()
    async with sessions() as session:
        await session.execute(text("UPDATE accounts SET enabled = false"))
        await session.commit()  # not through the accounts' queries: not counted
    assert await directory.snapshot() is cached
    now[0] = 61
    # Expired: still served while the next snapshot is read in the background.
    assert await directory.snapshot() is cached
    await directory.close()  # waits for that read
    fresh = await directory.snapshot()
    assert fresh is not cached
    credentials = fresh.lookup("whatsapp", "3001")
    assert credentials is not None and not credentials.enabled
