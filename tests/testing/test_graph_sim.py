"""The Graph API simulator: Meta's send shapes, checks and errors over real HTTP, and the
ServerThread that runs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from parley.testing import GraphSimulator, ServerThread

PHONE_ID = "106540352242922"
SEND = f"/v26.0/{PHONE_ID}/messages"
AUTH = {"Authorization": "Bearer wa-token"}


@pytest.fixture
def running(
    graph_server: tuple[GraphSimulator, ServerThread],
) -> tuple[GraphSimulator, ServerThread]:
    return graph_server


@pytest.fixture
def sim(graph_sim: GraphSimulator) -> GraphSimulator:
    return graph_sim


@pytest.fixture
async def http(running: tuple[GraphSimulator, ServerThread]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running[1].url, headers=AUTH, timeout=5) as client:
        yield client


def text(to: str, body: str, **extra: object) -> dict[str, object]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
        **extra,
    }


async def test_whatsapp_text_is_accepted_and_recorded(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    first = await http.post(
        SEND, json=text("+1 650-555-1234", "hello", context={"message_id": "wamid.in"})
    )
    second = await http.post(SEND, json=text("+1 650-555-1234", "again"))

    assert first.status_code == 200
    answer = first.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": "+1 650-555-1234", "wa_id": "16505551234"}]
    wamids = [answer["messages"][0]["id"], second.json()["messages"][0]["id"]]
    assert all(w.startswith("wamid.") for w in wamids) and wamids[0] != wamids[1]
    assert [s.json["text"]["body"] for s in await sim.wait_for_sends(2, timeout=1)] == [
        "hello",
        "again",
    ]
    assert sim.texts_to("+1 650-555-1234") == ["hello", "again"]
    assert sim.sends[0].path == SEND and sim.sends[0].headers["authorization"] == "Bearer wa-token"
    assert sim.receipts == []


async def test_send_by_business_scoped_user_id(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    body = {
        "messaging_product": "whatsapp",
        "recipient": "US.1349",
        "type": "text",
        "text": {"body": "hi"},
    }
    response = await http.post(SEND, json=body)
    assert response.json()["contacts"] == [{"input": "US.1349", "user_id": "US.1349"}]
    assert sim.texts_to("US.1349") == ["hi"]


async def test_read_receipt_goes_to_receipts(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    receipt = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.in",
        "typing_indicator": {"type": "text"},
    }
    response = await http.post(SEND, json=receipt)
    assert response.json() == {"success": True}
    assert [r.json["message_id"] for r in await sim.wait_for_receipts(1)] == ["wamid.in"]
    assert sim.sends == []


async def test_invalid_sends_are_refused_with_graph_errors(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    too_long = await http.post(SEND, json=text("34600000001", "x" * 4097))
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert error["code"] == 100 and error["type"] == "OAuthException" and error["fbtrace_id"]

    no_recipient = await http.post(SEND, json={"messaging_product": "whatsapp", "type": "text"})
    assert no_recipient.status_code == 400

    assert (await http.post(SEND, json=text("34600000001", "x" * 4096))).status_code == 200
    assert [r.status for r in sim.requests] == [400, 400, 200]
    assert len(sim.sends) == 1


async def test_missing_token_is_401_code_190(
    sim: GraphSimulator, running: tuple[GraphSimulator, ServerThread]
) -> None:
    async with httpx.AsyncClient(base_url=running[1].url) as anonymous:
        response = await anonymous.post(SEND, json=text("34600000001", "hi"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 190
    assert sim.sends == [] and sim.requests[0].status == 401


async def test_injected_faults_then_success(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    sim.inject(500, path=SEND)
    sim.inject(400, code=130429, error_subcode=2494055, headers={"x-business-use-case-usage": "{}"})

    failed = await http.post(SEND, json=text("34600000002", "one"))
    throttled = await http.post(SEND, json=text("34600000002", "two"))
    ok = await http.post(SEND, json=text("34600000002", "three"))

    assert failed.status_code == 500 and failed.json()["error"]["code"] == 2
    assert throttled.status_code == 400
    assert throttled.json()["error"]["code"] == 130429
    assert throttled.json()["error"]["error_subcode"] == 2494055
    assert throttled.headers["x-business-use-case-usage"] == "{}"
    assert ok.status_code == 200
    assert [r.status for r in sim.requests] == [500, 400, 200]
    assert sim.texts_to("34600000002") == ["three"]


async def test_fail_always_and_timeout(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    sim.fail_always(503)
    for _ in range(2):
        assert (await http.post(SEND, json=text("34600000003", "x"))).status_code == 503
    sim.clear_faults()
    sim.inject_timeout(delay=1)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(SEND, json=text("34600000003", "slow"), timeout=0.2)
    assert (await http.post(SEND, json=text("34600000003", "fast"))).status_code == 200


async def test_wait_for_sends_times_out_helpfully(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    await http.post(
        SEND, json={"messaging_product": "whatsapp", "status": "read", "message_id": "w"}
    )
    with pytest.raises(TimeoutError, match=r"expected 1 accepted sends within 0.1s, got 0"):
        await sim.wait_for_sends(1, timeout=0.1)


async def test_instagram_send_and_sender_actions(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    path = "/v26.0/17841400000000000/messages"
    typing = await http.post(
        path, json={"recipient": {"id": "IGSID1"}, "sender_action": "typing_on"}
    )
    sent = await http.post(path, json={"recipient": {"id": "IGSID1"}, "message": {"text": "olá"}})
    too_long = await http.post(
        path, json={"recipient": {"id": "IGSID1"}, "message": {"text": "é" * 501}}
    )

    assert typing.json() == {"recipient_id": "IGSID1"}
    assert sent.json()["recipient_id"] == "IGSID1"
    assert sent.json()["message_id"].startswith("mid.")
    assert too_long.status_code == 400  # 1002 bytes, though only 501 characters
    assert sim.texts_to("IGSID1") == ["olá"]
    assert len(sim.receipts) == 1


async def test_messenger_envelope_is_checked(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    page = "109029271668032"
    sim.messenger_pages.add(page)
    path = f"/v26.0/{page}/messages"
    base = {"recipient": {"id": "PSID1"}, "message": {"text": "é" * 1500}}

    ok = await http.post(path, json={**base, "messaging_type": "RESPONSE"})
    tagged = await http.post(
        path, json={**base, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    )
    refused = [
        await http.post(path, json={**base, "messaging_type": "WHENEVER"}),
        await http.post(path, json={**base, "messaging_type": "MESSAGE_TAG"}),
        await http.post(path, json={**base, "messaging_type": "RESPONSE", "tag": "HUMAN_AGENT"}),
        await http.post(path, json={**base, "reply_to": {"id": "x"}}),
        await http.post(path, json={**base, "message": {"text": "e" * 2001}}),
    ]

    assert (ok.status_code, tagged.status_code) == (200, 200)  # 1,500 characters, 3,000 bytes
    assert [r.status_code for r in refused] == [400] * 5
    assert {r.json()["error"]["code"] for r in refused} == {100}
    assert len(sim.texts_to("PSID1")) == 2


async def test_graph_instagram_serves_instagram_only(
    instagram_sim: GraphSimulator, instagram_server: tuple[GraphSimulator, ServerThread]
) -> None:
    instagram_sim.messenger_pages.add("17841400000000000")  # no pages on this host
    async with httpx.AsyncClient(base_url=instagram_server[1].url, headers=AUTH) as http:
        path = "/v26.0/17841400000000000/messages"
        quoted = {
            "recipient": {"id": "IGSID1"},
            "message": {"text": "hi"},
            "reply_to": {"mid": "m"},
        }
        sent = await http.post(path, json=quoted)
        too_long = await http.post(
            path, json={"recipient": {"id": "IGSID1"}, "message": {"text": "é" * 501}}
        )
        whatsapp = await http.post(path, json=text("34600000004", "hi"))
    instagram_sim.messenger_pages.clear()

    assert sent.status_code == 200
    assert (too_long.status_code, whatsapp.status_code) == (400, 400)
    assert instagram_sim.texts_to("IGSID1") == ["hi"]


async def test_send_rate_answers_130429(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    sim.send_rate = 2
    statuses = [
        (await http.post(SEND, json=text("34600000004", str(i)))).status_code for i in range(3)
    ]
    assert statuses == [200, 200, 400]
    assert sim.requests[-1].status == 400
    await asyncio.sleep(1.05)
    assert (await http.post(SEND, json=text("34600000004", "later"))).status_code == 200


async def test_server_thread_runs_an_app_with_lifespan() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    with ServerThread(app, lifespan="on") as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url)).text == "hi"
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


# --- media ----------------------------------------------------------------------------------


async def test_media_id_lookup_then_download_with_the_token(
    sim: GraphSimulator, http: httpx.AsyncClient
) -> None:
    media_id = sim.media.add(b"\xff\xd8\xff" + b"jpeg", "image/jpeg")

    lookup = await http.get(f"/v26.0/{media_id}")
    assert lookup.status_code == 200
    info = lookup.json()
    assert (info["id"], info["mime_type"], info["file_size"]) == (media_id, "image/jpeg", 7)
    assert info["messaging_product"] == "whatsapp" and info["sha256"]
    assert info["url"].startswith(f"{http.base_url}".rstrip("/") + sim.media.path_of(media_id))

    file = await http.get(info["url"])
    assert (file.status_code, file.content) == (200, b"\xff\xd8\xff" + b"jpeg")
    assert file.headers["content-type"] == "image/jpeg"
    assert len(sim.media_downloads) == 1

    anonymous = await http.get(info["url"], headers={"Authorization": ""})
    assert anonymous.status_code == 401
    unknown = await http.get("/v26.0/404404")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 100


async def test_media_faults_are_set_per_file(sim: GraphSimulator, http: httpx.AsyncClient) -> None:
    chunked = sim.media.add(b"x" * 200_000, "image/png", chunked=True)
    html = sim.media.add(b"<html>", "image/jpeg", content_type="text/html")
    moved = sim.media.add(b"", "image/jpeg", redirect_to="https://example.com/x.jpg")
    elsewhere = sim.media.add(b"", "image/jpeg", url="https://example.com/y.jpg")

    streamed = await http.get(sim.media.path_of(chunked))
    assert "content-length" not in streamed.headers and len(streamed.content) == 200_000
    assert (await http.get(sim.media.path_of(html))).headers["content-type"].startswith("text/html")
    redirect = await http.get(sim.media.path_of(moved))
    assert (redirect.status_code, redirect.headers["location"]) == (
        302,
        "https://example.com/x.jpg",
    )
    assert (await http.get(f"/v26.0/{elsewhere}")).json()["url"] == "https://example.com/y.jpg"
