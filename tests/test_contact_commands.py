"""`parley contacts erase` as an operator runs it on the store DATABASE_URL names: by phone or
by contact id, asked first unless `--yes`; the customer goes everywhere, their upstream objects
are queued and deleted by the worker side; a second run says "already erased" and succeeds; an
unknown customer is an error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parley.cli import app
from parley.config import Settings
from parley.observability.logging import reset_logging
from parley.runtime import build_llm
from parley.store.db import create_engine, create_sessionmaker
from parley.testing import GraphSimulator, OpenAISimulator
from parley.worker.upstream_deleter import UpstreamDeleter
from tests.api.test_contacts_admin import dump, write
from tests.conftest import MakeParley, Store

PHONE = "34622334455"
NAME = "Ottoline Brackenbury"
SECOND = "34633445566"


@pytest.fixture
def environment(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    yield
    reset_logging()  # the commands configure logging for their process


def invoke(*args: str, stdin: str | None = None, code: int = 0) -> str:
    """What the command printed: stdout when it succeeds, else stdout and stderr."""
    result = CliRunner().invoke(app, ["contacts", "erase", *args], input=stdin)
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.output


async def drain(settings: Settings) -> None:
    """What the running `parley worker` does with the queued upstream deletions."""
    engine = create_engine(settings.database_url)
    llm = build_llm(settings)
    try:
        deleter = UpstreamDeleter(
            sessions=create_sessionmaker(engine), llm=llm, call_timeout=settings.openai_timeout_s
        )
        drained = await deleter.drain()
        assert drained.failed == 0
    finally:
        await llm.close()
        await engine.dispose()


async def test_erase_by_phone_everywhere_then_again_cleanly(
    environment: None,
    make_parley: MakeParley,
    settings: Settings,
    openai_sim: OpenAISimulator,
    graph_sim: GraphSimulator,
    store: Store,
) -> None:
    parley = make_parley()
    await write(parley, PHONE, ["hello there"], name=NAME)
    await write(parley, SECOND, ["someone else"])
    await graph_sim.wait_for_sends(2, timeout=10)
    await parley.wait_for_rows("SELECT count(*) FROM outbox", [(0,)])
    await parley.stop()
    usage = await store.rows("SELECT day, model, requests, cost_usd FROM usage_daily")
    (remote,) = await store.rows(
        "SELECT c.remote_conversation_id FROM conversations c JOIN contacts k "
        "ON k.id = c.contact_id WHERE k.phone = ?",
        PHONE,
    )

    out = await asyncio.to_thread(
        invoke, "--channel", "whatsapp", "--phone", "+34 622334455", "--yes", "--json"
    )

    (erased,) = json.loads(out)["erased"]
    assert (erased["channel"], erased["requested_by"]) == ("whatsapp", "cli")
    assert (erased["conversations"], erased["messages"], erased["upstream"]) == (1, 2, 2)
    assert await store.rows("SELECT phone FROM contacts") == [(SECOND,)]
    assert await store.rows("SELECT day, model, requests, cost_usd FROM usage_daily") == usage
    await drain(settings)
    assert openai_sim.deleted_conversations == [remote[0]]
    assert len(openai_sim.deleted_responses) == 1
    everything = await dump(store)
    assert PHONE not in everything and NAME not in everything

    again = await asyncio.to_thread(invoke, "--channel", "whatsapp", "--phone", PHONE, "--yes")
    assert f"contact {erased['contact_id']} was already erased" in again
    by_id = await asyncio.to_thread(invoke, str(erased["contact_id"]), "--yes", "--json")
    assert json.loads(by_id)["already_erased"][0]["id"] == erased["id"]
    assert await store.rows("SELECT count(*) FROM erasures") == [(1,)]


async def test_erase_by_id_asks_first_and_refuses_what_it_cannot_name(
    environment: None, make_parley: MakeParley, graph_sim: GraphSimulator, store: Store
) -> None:
    parley = make_parley()
    await write(parley, SECOND, ["keep me for now"])
    await graph_sim.wait_for_sends(1, timeout=10)
    await parley.stop()
    ((contact,),) = await store.rows("SELECT id FROM contacts")

    declined = await asyncio.to_thread(invoke, str(contact), stdin="n\n", code=1)
    assert "cannot be undone" in declined
    assert await store.rows("SELECT count(*) FROM contacts") == [(1,)]

    table = await asyncio.to_thread(invoke, str(contact), stdin="y\n")
    assert "conversations" in table and "whatsapp" in table
    assert await store.rows("SELECT count(*) FROM contacts") == [(0,)]

    assert "no contact 424242" in await asyncio.to_thread(invoke, "424242", "--yes", code=1)
    unknown = await asyncio.to_thread(
        invoke, "--channel", "whatsapp", "--phone", "34699999999", "--yes", code=1
    )
    assert "no whatsapp contact" in unknown
    assert "exactly one" in await asyncio.to_thread(invoke, "--yes", code=1)
    assert "need --channel" in await asyncio.to_thread(invoke, "--phone", "346", code=1)
    assert "not a phone number" in await asyncio.to_thread(
        invoke, "--channel", "whatsapp", "--phone", "call me", code=1
    )


async def test_without_a_database_it_says_so(environment: None, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "parley.db"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["contacts", "erase", "1", "--yes"],
        env={"DATABASE_URL": f"sqlite+aiosqlite:///{missing}"},
    )
    assert result.exit_code == 1 and "error:" in result.output
    assert not missing.exists()
