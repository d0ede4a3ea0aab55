"""The prompt registry through the store: numbered immutable versions, bindings, rollbacks,
A/B assignment, variables, and prompt files."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.prompt_files import load_prompt_file
from parley.agent.prompts import (
    PromptDefaults,
    ab_bucket,
    choose_prompt,
    fill,
    local_time,
    profile_exists,
)
from parley.config import Settings
from parley.errors import PromptConflict, PromptInvalid, PromptNotFound
from parley.store.db import create_engine, create_sessionmaker
from parley.store.migrate import upgrade
from parley.store.models import Account, Contact, Conversation
from parley.store.queries import prompts as registry
from parley.store.queries.inbound import record_inbound
from parley.store.queries.prompts import Target, VersionFields
from tests.factories import inbound_text

Sessions = async_sessionmaker[AsyncSession]
DEFAULTS = PromptDefaults("Built in for {{customer_name}}.", "gpt-5-mini", "Europe/Madrid")
DEFAULT = Target(profile="default")
_mids = itertools.count(1)


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[Sessions]:
    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def new_conversation(sessions: Sessions, phone: str) -> int:
    async with sessions() as session:
        (conversation_id,) = await record_inbound(
            session,
            messages=[inbound_text(f"wamid.prompt{next(_mids)}", "hi", phone=phone)],
            correlation_id="c",
        )
        await session.commit()
    return conversation_id


async def choose(
    sessions: Sessions, conversation_id: int, now: datetime | None = None
) -> tuple[str | None, int | None, str]:
    """The choice for the conversation, as the worker makes it (committed)."""
    async with sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        account = await session.get(Account, conversation.account_id)
        contact = await session.get(Contact, conversation.contact_id)
        assert account is not None
        choice = await choose_prompt(
            session,
            conversation=conversation,
            account=account,
            contact=contact,
            defaults=DEFAULTS,
            now=now,
        )
        await session.commit()
    return choice.name, choice.version, choice.instructions


async def test_versions_are_numbered_immutable_and_checked(sessions: Sessions) -> None:
    async with sessions() as session:
        first = await registry.create_prompt(
            session,
            name="support",
            description="front line",
            first=VersionFields("One.", model="gpt-5-nano", settings={"temperature": 0.2}),
        )
        second = await registry.add_version(session, name="support", fields=VersionFields("Two."))
        await session.commit()
        assert (first.version, second.version) == (1, 2)
        with pytest.raises(PromptConflict):
            await registry.create_prompt(
                session, name="support", description=None, first=VersionFields("x")
            )
        with pytest.raises(PromptNotFound):
            await registry.get_version(session, name="support", version=3)
        with pytest.raises(PromptNotFound):
            await registry.add_version(session, name="nope", fields=VersionFields("x"))
        with pytest.raises(PromptInvalid, match="unknown model settings"):
            await registry.add_version(
                session, name="support", fields=VersionFields("x", settings={"colour": 1})
            )
        with pytest.raises(PromptInvalid, match="instructions"):
            await registry.add_version(session, name="support", fields=VersionFields("  "))
        with pytest.raises(PromptInvalid, match="prompt name"):
            await registry.create_prompt(
                session, name="has space", description=None, first=VersionFields("x")
            )
        latest = await registry.get_version(session, name="support")
        assert (latest.version, latest.instructions) == (2, "Two.")
        (summary,) = await registry.list_prompts(session)
        assert (summary.name, summary.versions, summary.latest) == ("support", 2, 2)


async def test_activate_and_rollback_step_back_through_versions(sessions: Sessions) -> None:
    async with sessions() as session:
        await registry.create_prompt(
            session, name="support", description=None, first=VersionFields("v1")
        )
        for text in ("v2", "v3"):
            await registry.add_version(session, name="support", fields=VersionFields(text))
        with pytest.raises(PromptNotFound, match="activate one first"):
            await registry.rollback(session, target=DEFAULT)
        for number in (1, 3):
            version = await registry.get_version(session, name="support", version=number)
            await registry.activate(session, target=DEFAULT, version=version)
        assert (await registry.view_binding(session, target=DEFAULT)).version == 3

        await registry.rollback(session, target=DEFAULT)  # to the one active before: v1
        assert (await registry.view_binding(session, target=DEFAULT)).version == 1
        with pytest.raises(PromptNotFound, match="no earlier version"):
            await registry.rollback(session, target=DEFAULT)
        v2 = await registry.get_version(session, name="support", version=2)
        await registry.rollback(session, target=DEFAULT, version=v2)
        await registry.rollback(session, target=DEFAULT)  # one below: v1
        assert (await registry.view_binding(session, target=DEFAULT)).version == 1
        assert await profile_exists(session, "default")
        assert not await profile_exists(session, "sales")
        with pytest.raises(PromptNotFound, match="no account"):
            await registry.activate(session, target=Target(account_id=999), version=v2)


async def test_account_binding_wins_and_variables_are_filled(sessions: Sessions) -> None:
    conversation_id = await new_conversation(sessions, "34600000501")
    moment = datetime(2026, 11, 23, 13, 5, tzinfo=UTC)
    assert await choose(sessions, conversation_id, moment) == (None, None, "Built in for Ana.")
    async with sessions() as session:
        account_id = (await session.scalars(select(Account.id))).one()
        await registry.create_prompt(
            session,
            name="support",
            description=None,
            first=VersionFields(
                "Hi {{customer_name}} on {{channel}} of {{account}}, {{local_time}}, "
                "{{tone}} {{mystery}}",
                variables={"tone": "warm", "customer_name": "friend"},
            ),
        )
        await registry.create_prompt(
            session, name="vip", description=None, first=VersionFields("VIP {{customer_name}}")
        )
        support = await registry.get_version(session, name="support")
        await registry.activate(session, target=DEFAULT, version=support)
        await session.commit()

    name, version, instructions = await choose(sessions, conversation_id, moment)
    assert (name, version) == ("support", 1)
    assert instructions == (
        "Hi Ana on whatsapp of 106540352242922, 2026-11-23 14:05 (Europe/Madrid), warm {{mystery}}"
    )
    async with sessions() as session:
        vip = await registry.get_version(session, name="vip")
        ref = str(account_id)
        found = await registry.account_id_for(session, ref="106540352242922")
        assert found == await registry.account_id_for(session, ref=ref) == account_id
        await registry.activate(session, target=Target(account_id=account_id), version=vip)
        await session.commit()
    assert await choose(sessions, conversation_id) == ("vip", 1, "VIP Ana")


async def test_ab_split_is_sticky_per_conversation(sessions: Sessions) -> None:
    async with sessions() as session:
        await registry.create_prompt(
            session, name="support", description=None, first=VersionFields("A")
        )
        await registry.add_version(session, name="support", fields=VersionFields("B"))
        v1 = await registry.get_version(session, name="support", version=1)
        v2 = await registry.get_version(session, name="support", version=2)
        await registry.activate(session, target=DEFAULT, version=v1)
        with pytest.raises(PromptInvalid, match="between 0 and 100"):
            await registry.start_ab(session, target=DEFAULT, candidate=v2, percent=101)
        with pytest.raises(PromptInvalid, match="active version already"):
            await registry.start_ab(session, target=DEFAULT, candidate=v1, percent=10)
        await registry.start_ab(session, target=DEFAULT, candidate=v2, percent=30)
        await session.commit()

    ids = [await new_conversation(sessions, f"3460000060{n}") for n in range(8)]
    first = {i: (await choose(sessions, i))[1] for i in ids}
    assert first == {i: 2 if ab_bucket(i) < 30 else 1 for i in ids}

    # Moving the split does not move conversations that already have their side.
    async with sessions() as session:
        await registry.start_ab(session, target=DEFAULT, candidate=v2, percent=100)
        await session.commit()
    assert {i: (await choose(sessions, i))[1] for i in ids} == first
    late = await new_conversation(sessions, "34600000699")
    assert (await choose(sessions, late))[1] == 2

    # Stopping the test brings everyone back to the active version.
    async with sessions() as session:
        await registry.stop_ab(session, target=DEFAULT)
        await session.commit()
    assert {(await choose(sessions, i))[1] for i in ids} == {1}


def test_fill_leaves_unknown_placeholders_and_local_time_reads_in_the_zone() -> None:
    assert fill("{{ a }}-{{b}}-{{a}}", {"a": "x"}) == "x-{{b}}-x"
    moment = datetime(2026, 7, 1, 22, 30, tzinfo=UTC)
    assert local_time("America/New_York", moment) == "2026-07-01 18:30 (America/New_York)"
    assert local_time("Not/AZone", moment) == "2026-07-01 22:30 (UTC)"


def test_prompt_files_yaml_and_markdown(tmp_path: Path) -> None:
    yaml_file = tmp_path / "support.yaml"
    yaml_file.write_text(
        "description: Front line\nmodel: gpt-5-nano\ntemperature: 0.3\n"
        "settings: {max_output_tokens: 300}\nvariables: {tone: warm}\n"
        "instructions: |\n  Be {{tone}}.\n",
        encoding="utf-8",
    )
    loaded = load_prompt_file(yaml_file)
    assert (loaded.name, loaded.description) == ("support", "Front line")
    assert loaded.fields.model == "gpt-5-nano"
    assert loaded.fields.settings == {"max_output_tokens": 300, "temperature": 0.3}
    assert loaded.fields.variables == {"tone": "warm"}
    assert loaded.fields.instructions == "Be {{tone}}.\n"

    markdown = tmp_path / "sales.md"
    markdown.write_text("---\nname: sales-team\nnote: first\n---\n# Sales\nSell.\n", "utf-8")
    loaded = load_prompt_file(markdown)
    assert (loaded.name, loaded.fields.note) == ("sales-team", "first")
    assert loaded.fields.instructions == "# Sales\nSell.\n"

    for name, text, error in [
        ("bad.yaml", "instructions: [1, 2]", "non-empty text"),
        ("bad2.yaml", "instructions: x\ncolour: red", "unknown keys"),
        ("bad3.yaml", "instructions: x\n  - : :", "not valid YAML"),
        ("bad.md", "---\nname: x\nno closing", "closing ---"),
        ("bad.txt", "x", ".yaml, .yml or .md"),
    ]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(PromptInvalid, match=error):
            load_prompt_file(path)
    with pytest.raises(PromptInvalid, match="cannot read"):
        load_prompt_file(tmp_path / "missing.yaml")
