"""The console in a real browser: Debian's Chromium driven by Playwright against a real
`parley serve` process (SQLite) with the OpenAI and Graph simulators. Every wait is on the
page or on the simulators, never a fixed sleep.

Chromium must be at /usr/bin/chromium (`.ci/run` installs Debian's package): without it these
tests fail rather than skip, so that CI cannot pass them by not running them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from tests.api.test_handoff import wait_for_texts
from tests.conftest import Store, parley_env
from tests.console.helpers import new_user, say
from tests.test_cli import start_serve

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium reaches for Google's hosts at start and stalls on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@dataclass
class Served:
    client: httpx.AsyncClient
    """On the running `parley serve`: webhooks and the admin API."""
    store: Store


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def served(
    openai_server: tuple[OpenAISimulator, ServerThread],
    graph_server: tuple[GraphSimulator, ServerThread],
    instagram_server: tuple[GraphSimulator, ServerThread],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Served]:
    """One `parley serve` process on a SQLite file for the module (a start costs seconds):
    each test uses its own users and customers. The HTTP tests cover both backends."""
    folder = tmp_path_factory.mktemp("console")
    env = parley_env(
        openai_url=openai_server[1].url,
        graph_url=graph_server[1].url,
        instagram_url=instagram_server[1].url,
        database_url=f"sqlite+aiosqlite:///{folder / 'parley.db'}",
        queue_url=None,
    )
    process, url = await start_serve({**os.environ, **env}, folder, keep_logs=False)
    store = Store(env["DATABASE_URL"])
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Served(client, store)
    finally:
        await store.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


@pytest.fixture
async def page(
    browser: Browser, served: Served, openai_sim: OpenAISimulator, graph_sim: GraphSimulator
) -> AsyncIterator[Page]:
    """A fresh browser profile (no cookies) per test, with the simulators reset."""
    context = await browser.new_context(base_url=str(served.client.base_url))
    context.set_default_timeout(WAIT_MS)
    opened = await context.new_page()
    yield opened
    await context.close()


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/console/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


async def test_sign_in_and_a_bad_token_refused(page: Page, served: Served) -> None:
    _, token = await new_user(served.client, "ada", is_admin=True)
    await page.goto("/console")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API token").fill("pk-wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    await sign_in(page, token)
    cookies = await page.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "parley_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

    # A phone-sized screen: one column, nothing wider than the screen; the skip link comes
    # first from the keyboard.
    await page.set_viewport_size({"width": 375, "height": 740})
    await page.reload()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()


async def test_a_whatsapp_message_appears_in_the_inbox_without_a_reload(
    page: Page, served: Served
) -> None:
    _, token = await new_user(served.client, "bea", is_admin=True)
    await sign_in(page, token)
    await page.evaluate("window.notReloaded = true")
    await say(served.client, "34600000701", "Is my parcel on its way?", name="Carmen")
    row = page.locator(".conversation", has_text="Carmen")
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("whatsapp")
    # The time is shown in the viewer's zone, not as the UTC it is sent in.
    time = row.locator("time")
    assert (await time.inner_text()) != await time.get_attribute("datetime")
    assert await page.evaluate("window.notReloaded === true")


async def test_take_over_reply_hand_back_and_the_agent_answers_again(
    page: Page, served: Served, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(served.client, "cleo", is_admin=True)
    phone = "34600000702"
    await say(served.client, phone, "hello", name="Dario")
    await wait_for_texts(graph_sim, phone, 1)
    await sign_in(page, token)
    await page.locator(".conversation", has_text="Dario").get_by_role("link").click()
    await expect(page.locator("#mode")).to_have_text("agent")
    await expect(page.get_by_label("Message")).to_be_disabled()

    await page.get_by_role("button", name="Take over").click()
    await expect(page.locator("#mode")).to_have_text("human")
    await page.get_by_label("Message").fill("Hi Dario, a person here.")
    await page.get_by_role("button", name="Send reply").click()
    texts = await wait_for_texts(graph_sim, phone, 2)
    assert texts[-1] == "Hi Dario, a person here."
    await expect(page.locator(".message", has_text="a person here")).to_be_visible()

    await page.get_by_role("button", name="Hand back").click()
    await expect(page.locator("#mode")).to_have_text("agent")
    await say(served.client, phone, "thanks, one more thing", name="Dario")
    texts = await wait_for_texts(graph_sim, phone, 3)
    assert "one more thing" in texts[-1]  # the agent (echoing simulator) answered it
    # ...and the page shows both without a reload.
    await expect(page.locator(".message.dir-in", has_text="one more thing")).to_be_visible()
    await expect(page.locator(".message.dir-out").last).to_contain_text("one more thing")


async def test_a_plain_user_cannot_open_another_users_conversation(
    page: Page, served: Served, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(served.client, "dora", is_admin=False)
    phone = "34600000703"
    await say(served.client, phone, "private matter", name="Elena")
    await wait_for_texts(graph_sim, phone, 1)
    ((conversation_id,),) = await served.store.rows(
        "SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE c.phone = ?",
        phone,
    )
    await sign_in(page, token)
    await expect(page.get_by_text("No conversations")).to_be_visible()
    response = await page.goto(f"/console/conversations/{conversation_id}")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("alert")).to_have_text("There is no such conversation.")
    await expect(page.get_by_text("private matter")).to_have_count(0)


async def test_the_usage_chart_shows_the_days_figures(
    page: Page, served: Served, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(served.client, "edna", is_admin=True)
    phone = "34600000704"
    await say(served.client, phone, "what does this cost?")
    await wait_for_texts(graph_sim, phone, 1)
    # The day's tokens as the simulator reported them for each turn and the agent stored them
    # (this module's other tests' turns included: they share the server).
    ((tokens, model),) = await served.store.rows(
        "SELECT sum(input_tokens + output_tokens), model FROM messages"
        " WHERE direction = 'out' AND model IS NOT NULL GROUP BY model"
    )
    await sign_in(page, token)
    await page.get_by_role("link", name="Usage").click()
    chart = page.locator("figure", has_text="Tokens (input + output) per day, by model")
    today = datetime.now(UTC).date().isoformat()
    bar = chart.locator(f'svg rect[data-day="{today}"][data-series="{model}"]')
    await expect(bar).to_have_count(1)
    assert float(await bar.get_attribute("data-value") or "nan") == tokens
    await expect(page.get_by_role("img").first).to_be_visible()
