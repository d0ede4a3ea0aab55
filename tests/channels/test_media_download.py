"""Fetching customers' files against the Graph simulator over real HTTP: the allow-list, the
size cap while streaming, the content-type check, redirects, timeouts and WhatsApp's media
id lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from parley.channels import registry
from parley.channels.base import Media
from parley.channels.download import download, fetch_media, media_policy
from parley.config import Settings
from parley.errors import MediaUnavailable
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread

TOKEN = "wa-token"
JPEG = b"\xff\xd8\xff\xe0" + b"\x10" * 2000
OGG = b"OggS" + b"\x00" * 500


@pytest.fixture
def base(graph_server: tuple[GraphSimulator, ServerThread]) -> str:
    return graph_server[1].url


@pytest.fixture
def settings(base: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, graph_api_base_url=base, parley_media_max_bytes=64 * 1024
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def fetch(client: httpx.AsyncClient, settings: Settings, media: Media) -> bytes:
    channel = registry.get("whatsapp")
    file = await fetch_media(channel, client, media, token=TOKEN, settings=settings)
    return file.data


async def refused(client: httpx.AsyncClient, settings: Settings, media: Media) -> str:
    with pytest.raises(MediaUnavailable) as caught:
        await fetch(client, settings, media)
    return caught.value.reason


async def test_a_media_id_is_looked_up_then_downloaded_with_the_token(
    graph_sim: GraphSimulator, client: httpx.AsyncClient, settings: Settings
) -> None:
    media_id = graph_sim.media.add(JPEG, "image/jpeg")
    channel = registry.get("whatsapp")

    file = await fetch_media(
        channel, client, Media("image", media_id=media_id), token=TOKEN, settings=settings
    )

    assert (file.data, file.content_type) == (JPEG, "image/jpeg")
    lookup, served = graph_sim.requests
    assert lookup.path == f"/v26.0/{media_id}"
    assert lookup.headers["authorization"] == served.headers["authorization"] == f"Bearer {TOKEN}"
    assert served.path == graph_sim.media.path_of(media_id)


async def test_an_expired_url_is_looked_up_again_once(
    graph_sim: GraphSimulator, client: httpx.AsyncClient, settings: Settings
) -> None:
    media_id = graph_sim.media.add(OGG, "audio/ogg")
    graph_sim.inject(404, path=graph_sim.media.path_of(media_id))
    assert await fetch(client, settings, Media("audio", media_id=media_id)) == OGG
    assert [r.path for r in graph_sim.requests].count(f"/v26.0/{media_id}") == 2

    graph_sim.inject(404, times=2, path=graph_sim.media.path_of(media_id))
    assert await refused(client, settings, Media("audio", media_id=media_id)) == "not_found"
    assert await refused(client, settings, Media("image", media_id="404404")) == "not_found"


async def test_an_attachment_url_is_downloaded_directly(
    graph_sim: GraphSimulator, base: str, client: httpx.AsyncClient, settings: Settings
) -> None:
    media_id = graph_sim.media.add(JPEG, "image/jpeg", needs_token=False)
    url = base + graph_sim.media.path_of(media_id)
    assert await fetch(client, settings, Media("image", url=url)) == JPEG
    assert [r.path for r in graph_sim.requests] == [graph_sim.media.path_of(media_id)]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_file_over_the_cap_is_refused_while_it_streams(
    graph_sim: GraphSimulator, client: httpx.AsyncClient, settings: Settings, chunked: bool
) -> None:
    # With Content-Length the answer is refused before its body; without, once the bytes
    # read pass the cap.
    big = graph_sim.media.add(JPEG * 40, "image/jpeg", chunked=chunked)
    with pytest.raises(MediaUnavailable) as caught:
        await fetch(client, settings, Media("image", media_id=big))
    assert caught.value.reason == "too_large"
    assert str(caught.value).startswith("too_large: over" if chunked else "too_large: 80")


async def test_the_content_type_must_fit_the_kind(
    graph_sim: GraphSimulator, client: httpx.AsyncClient, settings: Settings
) -> None:
    html = graph_sim.media.add(b"<html>hi</html>", "image/jpeg", content_type="text/html")
    lying = graph_sim.media.add(b"<html>hi</html>", "image/jpeg")
    audio_as_image = graph_sim.media.add(OGG, "audio/ogg")
    generic = graph_sim.media.add(OGG, "audio/ogg", content_type="application/octet-stream")

    assert await refused(client, settings, Media("image", media_id=html)) == "wrong_type"
    # An image must look like one: the model is told its type.
    assert await refused(client, settings, Media("image", media_id=lying)) == "wrong_type"
    assert await refused(client, settings, Media("image", media_id=audio_as_image)) == (
        "wrong_type"
    )
    # A type that says nothing is decided by the bytes' signature.
    assert await fetch(client, settings, Media("audio", media_id=generic)) == OGG
    # Kinds Parley never downloads are refused before any request.
    before = len(graph_sim.requests)
    assert await refused(client, settings, Media("document", media_id=generic)) == "wrong_type"
    assert len(graph_sim.requests) == before


async def test_hosts_off_the_allow_list_are_never_asked(
    graph_sim: GraphSimulator,
    openai_server: tuple[OpenAISimulator, ServerThread],
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    openai_sim, openai = openai_server
    openai_sim.reset()
    foreign = f"{openai.url}/evil.jpg"
    pointed = graph_sim.media.add(JPEG, "image/jpeg", url=foreign)
    moved = graph_sim.media.add(JPEG, "image/jpeg", redirect_to=foreign)

    assert await refused(client, settings, Media("image", url=foreign)) == "host_not_allowed"
    assert await refused(client, settings, Media("image", media_id=pointed)) == ("host_not_allowed")
    assert await refused(client, settings, Media("image", media_id=moved)) == "host_not_allowed"
    assert openai_sim.requests == []


def test_the_allow_list_is_meta_over_https_and_the_configured_bases(settings: Settings) -> None:
    policy = media_policy(settings)
    assert policy.allows("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1")
    assert policy.allows("https://scontent.xx.fbcdn.net/v/arst")
    assert policy.allows("https://scontent-iad3-1.cdninstagram.com/v/t51")
    assert policy.allows("https://graph.facebook.com/v26.0/123")
    assert policy.allows(settings.graph_api_base_url + "/cdn/media/x")
    assert not policy.allows("http://lookaside.fbsbx.com/x")  # not over HTTPS
    assert not policy.allows("https://fbsbx.com.evil.example/x")
    assert not policy.allows("https://evilfbcdn.net/x")
    assert not policy.allows("https://image-url/foo.png")
    assert not policy.allows("file:///etc/passwd")
    assert not policy.allows("https://lookaside.fbsbx.com:8443/x")


async def test_a_slow_file_times_out(
    graph_sim: GraphSimulator, client: httpx.AsyncClient, settings: Settings
) -> None:
    media_id = graph_sim.media.add(JPEG, "image/jpeg")
    graph_sim.inject_timeout(delay=5, path=graph_sim.media.path_of(media_id))
    quick = settings.model_copy(update={"parley_media_timeout": 0.3})
    assert await refused(client, quick, Media("image", media_id=media_id)) == "timeout"


async def test_download_sends_the_token_only_to_the_host_it_started_on(
    graph_sim: GraphSimulator, base: str, client: httpx.AsyncClient, settings: Settings
) -> None:
    target = graph_sim.media.add(JPEG, "image/jpeg", needs_token=False)
    local = base.replace("127.0.0.1", "localhost")
    moved = graph_sim.media.add(
        JPEG, "image/jpeg", redirect_to=local + graph_sim.media.path_of(target)
    )
    policy = media_policy(settings)
    wider = type(policy)(
        max_bytes=policy.max_bytes,
        timeout=policy.timeout,
        origins=policy.origins | {("http", "localhost", int(base.rsplit(":", 1)[1]))},
    )
    file = await download(
        client, base + graph_sim.media.path_of(moved), kind="image", token=TOKEN, policy=wider
    )
    assert file.data == JPEG
    first, second = graph_sim.requests
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in second.headers
