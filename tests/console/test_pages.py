"""The console over HTTP on a running Parley, both backends: sign-in and its cookie, CSRF,
what a plain user may see, an operator's take over, reply and hand back through the forms,
and the live fragments' cheap unchanged answer."""

from __future__ import annotations

import re

import httpx

from parley.testing import GraphSimulator, OpenAISimulator
from tests.api.test_handoff import conversation_of, wait_for_texts
from tests.conftest import Parley
from tests.console.helpers import ADMIN, csrf_of, new_user, say
from tests.factories import PHONE_NUMBER_ID

WAIT = 15.0


def console_client(parley: Parley) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=parley.server.url, timeout=10)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/console/login", data={"token": token})


async def test_sign_in_sets_a_strict_cookie_and_a_bad_token_is_refused(parley: Parley) -> None:
    _, token = await new_user(parley.client, "olga", is_admin=True)
    async with console_client(parley) as client:
        assert (await client.get("/console")).status_code == 303  # to the sign-in form
        refused = await sign_in(client, "pk-not-a-token")
        assert refused.status_code == 401 and "not valid" in refused.text
        assert "set-cookie" not in refused.headers

        signed = await sign_in(client, token)
        assert signed.status_code == 303 and signed.headers["location"] == "/console"
        cookie = signed.headers["set-cookie"]
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/console"} <= flags
        assert "secure" not in flags  # plain http here
        assert token not in cookie
        inbox = await client.get("/console")
        assert inbox.status_code == 200 and "Inbox" in inbox.text and token not in inbox.text

        # Behind a TLS proxy that uvicorn trusts (loopback), the cookie is Secure.
        proxied = await client.post(
            "/console/login", data={"token": token}, headers={"x-forwarded-proto": "https"}
        )
        assert "secure" in {p.strip().lower() for p in proxied.headers["set-cookie"].split(";")}

        await client.post("/console/logout")
        assert (await client.get("/console")).status_code == 303


async def test_another_sites_page_cannot_sign_the_browser_in(parley: Parley) -> None:
    _, token = await new_user(parley.client, "oscar", is_admin=True)
    async with console_client(parley) as client:
        forged = await client.post(
            "/console/login", data={"token": token}, headers={"origin": "https://evil.example"}
        )
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        own = await client.post(
            "/console/login", data={"token": token}, headers={"origin": parley.server.url}
        )
        assert own.status_code == 303 and "set-cookie" in own.headers


async def test_refused_sign_ins_lock_the_address_like_the_api(make_parley: object) -> None:
    parley = make_parley(parley_auth_failure_limit=2)  # type: ignore[operator]
    async with console_client(parley) as client:
        for _ in range(2):
            assert (await sign_in(client, "pk-wrong")).status_code == 401
        locked = await sign_in(client, "pk-wrong")
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        # The API's bearer tokens share the allowance.
        api = await client.get("/admin/users", headers=ADMIN)
        assert api.status_code == 429


async def test_revoking_the_token_ends_the_session(parley: Parley) -> None:
    user_id, token = await new_user(parley.client, "pavel", is_admin=True)
    async with console_client(parley) as client:
        await sign_in(client, token)
        assert (await client.get("/console")).status_code == 200
        ((token_id,),) = await parley.rows("SELECT id FROM api_tokens WHERE user_id = ?", user_id)
        revoked = await parley.client.delete(
            f"/admin/users/{user_id}/tokens/{token_id}", headers=ADMIN
        )
        assert revoked.status_code == 200
        assert (await client.get("/console")).status_code == 303
        polled = await client.get("/console/conversations/rows", headers={"hx-request": "true"})
        assert polled.headers["hx-redirect"] == "/console/login"


async def test_forms_without_the_sessions_csrf_token_are_refused(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(parley.client, "quinn", is_admin=True)
    phone = "34600000901"
    await say(parley.client, phone, "hello")
    await wait_for_texts(graph_sim, phone, 1, WAIT)
    conversation_id = await conversation_of(parley, phone)
    async with console_client(parley) as client:
        await sign_in(client, token)
        url = f"/console/conversations/{conversation_id}/takeover"
        assert (await client.post(url)).status_code == 403
        assert (await client.post(url, data={"csrf": "forged"})).status_code == 403
        csrf = csrf_of((await client.get(f"/console/conversations/{conversation_id}")).text)
        async with console_client(parley) as stranger:
            # One session's token does not pass for another's.
            _, token2 = await new_user(parley.client, "rita", is_admin=True)
            await sign_in(stranger, token2)
            refused = await stranger.post(url, data={"csrf": csrf})
            assert refused.status_code == 403
        assert await parley.rows(
            "SELECT mode FROM conversations WHERE id = ?", conversation_id
        ) == [("agent",)]
        # htmx sends it as a header.
        taken = await client.post(url, headers={"x-csrf-token": csrf})
        assert taken.status_code == 303
        assert await parley.rows(
            "SELECT mode FROM conversations WHERE id = ?", conversation_id
        ) == [("human",)]


async def test_a_plain_user_sees_only_their_own_conversations(
    parley: Parley, graph_sim: GraphSimulator, openai_sim: OpenAISimulator
) -> None:
    _, token = await new_user(parley.client, "sara", is_admin=False)
    answered = await parley.client.post(
        "/v1/responses",
        json={"model": "default", "input": "my own question"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answered.status_code == 200, answered.text
    phone = "34600000902"
    await say(parley.client, phone, "someone else's message", name="Tomas")
    await wait_for_texts(graph_sim, phone, 1, WAIT)
    theirs = await conversation_of(parley, phone)
    ((own,),) = await parley.rows("SELECT id FROM conversations WHERE channel = 'api'")

    async with console_client(parley) as client:
        await sign_in(client, token)
        inbox = await client.get("/console")
        assert f'data-id="{own}"' in inbox.text and f'data-id="{theirs}"' not in inbox.text
        # Asking for the other account in the filters changes nothing.
        ((account,),) = await parley.rows(
            "SELECT account_id FROM conversations WHERE id = ?", theirs
        )
        filtered = await client.get("/console", params={"account_id": account})
        assert f'data-id="{theirs}"' not in filtered.text
        page = await client.get(f"/console/conversations/{own}")
        assert page.status_code == 200 and "my own question" in page.text
        assert "Take over" not in page.text
        hidden = await client.get(f"/console/conversations/{theirs}")
        assert hidden.status_code == 404
        assert "someone else" not in hidden.text
        assert (await client.get(f"/console/conversations/{theirs}/live")).status_code == 404
        # Read-only even on their own conversation.
        refused = await client.post(
            f"/console/conversations/{own}/takeover",
            headers={"x-csrf-token": await _csrf_header(client, own)},
        )
        assert refused.status_code == 403


async def _csrf_header(client: httpx.AsyncClient, conversation_id: int) -> str:
    """The session's CSRF token as the page's htmx header carries it."""
    html = (await client.get(f"/console/conversations/{conversation_id}")).text
    marker = '"X-CSRF-Token": "'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


async def test_take_over_reply_and_hand_back_through_the_forms(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(parley.client, "uma", is_admin=True)
    phone = "34600000903"
    await say(parley.client, phone, "first")
    await wait_for_texts(graph_sim, phone, 1, WAIT)
    conversation_id = await conversation_of(parley, phone)
    url = f"/console/conversations/{conversation_id}"
    async with console_client(parley) as client:
        await sign_in(client, token)
        page = await client.get(url)
        assert "Take over" in page.text and "<fieldset disabled>" in page.text.replace(" >", ">")
        csrf = csrf_of(page.text)

        early = await client.post(f"{url}/reply", data={"csrf": csrf, "text": "too soon"})
        assert early.status_code == 409 and "take it over" in early.text

        assert (await client.post(f"{url}/takeover", data={"csrf": csrf})).status_code == 303
        page = await client.get(url)
        assert "Hand back" in page.text and 'id="mode">human<' in page.text

        sent = await client.post(f"{url}/reply", data={"csrf": csrf, "text": "A person here."})
        assert sent.status_code == 303
        texts = await wait_for_texts(graph_sim, phone, 2, WAIT)
        assert texts[-1] == "A person here."
        await parley.wait_for_rows(
            f"SELECT sender, status FROM messages WHERE conversation_id = {conversation_id}"
            " AND text = 'A person here.'",
            [("operator", "sent")],
            timeout=WAIT,
        )

        # A customer message while a person has it stays unanswered; the hand-back with
        # "answer what is pending" has the agent answer it.
        await say(parley.client, phone, "still there?")
        await parley.wait_for_rows(
            f"SELECT count(*) FROM messages WHERE conversation_id = {conversation_id}"
            " AND direction = 'in' AND status = 'received'",
            [(1,)],
            timeout=WAIT,
        )
        back = await client.post(f"{url}/handback", data={"csrf": csrf, "answer_pending": "yes"})
        assert back.status_code == 303
        texts = await wait_for_texts(graph_sim, phone, 3, WAIT)
        assert "still there?" in texts[-1]  # the simulator echoes what it answers
        page = await client.get(url)
        assert 'id="mode">agent<' in page.text and "A person here." in page.text


async def test_the_live_fragments_answer_204_while_nothing_changed(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    _, token = await new_user(parley.client, "vera", is_admin=True)
    async with console_client(parley) as client:
        await sign_in(client, token)
        inbox = await client.get("/console")
        version = inbox.text.split('data-version="')[1].split('"')[0]
        unchanged = await client.get("/console/conversations/rows", params={"v": version})
        assert unchanged.status_code == 204 and unchanged.content == b""

        phone = "34600000904"
        await say(parley.client, phone, "new here", name="Wanda")
        await parley.wait_filed()
        changed = await client.get("/console/conversations/rows", params={"v": version})
        assert changed.status_code == 200 and "Wanda" in changed.text
        assert 'id="rows"' in changed.text and "<html" not in changed.text

        await wait_for_texts(graph_sim, phone, 1, WAIT)
        conversation_id = await conversation_of(parley, phone)
        live = f"/console/conversations/{conversation_id}/live"
        first = await client.get(live)
        marker = first.text.split('data-version="')[1].split('"')[0]
        assert (await client.get(live, params={"v": marker})).status_code == 204


def bars(html: str, caption: str) -> dict[str, float]:
    """The chart under `caption`: each series' value on its day (one day here)."""
    figure = html.split(f"<figcaption>{caption}</figcaption>", 1)[1].split("</figure>", 1)[0]
    found = re.findall(r'data-series="([^"]*)" data-value="([^"]*)"', figure)
    return {series: float(value) for series, value in found}


async def test_the_usage_page_charts_the_days_figures_and_a_user_sees_their_own(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    _, admin = await new_user(parley.client, "xena", is_admin=True)
    _, plain = await new_user(parley.client, "yuri", is_admin=False)
    answered = await parley.client.post(
        "/v1/responses",
        json={"model": "default", "input": "a question of my own"},
        headers={"Authorization": f"Bearer {plain}"},
    )
    assert answered.status_code == 200, answered.text
    phone = "34600000905"
    await say(parley.client, phone, "how much?")
    await wait_for_texts(graph_sim, phone, 1, WAIT)
    # Both accounts' usage is stored: what the page reads.
    await parley.wait_for_rows("SELECT count(DISTINCT account_id) FROM usage_daily", [(2,)])
    by_channel = dict(
        await parley.rows(
            "SELECT v.channel, sum(m.input_tokens + m.output_tokens) FROM messages m"
            " JOIN conversations v ON v.id = m.conversation_id"
            " WHERE m.model IS NOT NULL GROUP BY v.channel"
        )
    )
    async with console_client(parley) as client:
        await sign_in(client, admin)
        html = (await client.get("/console/usage")).text
        tokens = bars(html, "Tokens (input + output) per day, by account")
        assert tokens[f"whatsapp {PHONE_NUMBER_ID}"] == by_channel["whatsapp"]
        assert sum(tokens.values()) == sum(by_channel.values())
        assert bars(html, "Tokens (input + output) per day, by model") == {
            "gpt-5-mini": sum(by_channel.values())
        }
        assert "Prompt versions" in html

    async with console_client(parley) as client:
        await sign_in(client, plain)
        html = (await client.get("/console/usage")).text
        mine = bars(html, "Tokens (input + output) per day, by account")
        assert list(mine.values()) == [by_channel["api"]]
        assert "Prompt versions" not in html
