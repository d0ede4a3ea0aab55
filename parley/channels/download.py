"""Downloading a file a customer sent, within limits: Meta's hosts only, a size cap enforced
while the bytes stream in, a content-type check, one timeout for the whole fetch, and no
redirect that leaves the allow-list.

A URL in a webhook is not ours: it could point anywhere (a forged or odd payload, a media
lookup answered by something else), so the host is checked before any request is made and
again at every redirect, and the access token only goes to the host the fetch started on.
Every refusal and failure is a `MediaUnavailable` with a short reason and no URL in it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import structlog

from parley.channels.base import Channel, Downloaded, Media
from parley.channels.media import GENERIC_TYPES, accepted_types, bare_type, sniff
from parley.config import Settings
from parley.errors import MediaUnavailable

__all__ = ["META_HOSTS", "MediaPolicy", "download", "fetch_media", "media_policy"]

log = structlog.get_logger(__name__)

META_HOSTS = (
    "fbcdn.net",
    "fbsbx.com",
    "cdninstagram.com",
    "whatsapp.net",
    "graph.facebook.com",
    "graph.instagram.com",
)
"""Hosts (and their subdomains) Meta serves customers' files from, over HTTPS only: its CDNs
(``scontent.xx.fbcdn.net``, ``lookaside.fbsbx.com``, ``*.cdninstagram.com``,
``mmg.whatsapp.net``) and its APIs."""

MAX_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    max_bytes: int
    timeout: float
    """Seconds for the whole fetch: URL lookup, redirects and body."""
    origins: frozenset[tuple[str, str, int | None]] = frozenset()
    """(scheme, host, port) of the configured API bases, allowed as they are (a loopback
    simulator in tests, a proxy in front of the Graph API)."""
    hosts: tuple[str, ...] = META_HOSTS

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if not host:
            return False
        if (parts.scheme, host, port) in self.origins:
            return True
        if parts.scheme != "https" or port not in (None, 443):
            return False
        return any(host == allowed or host.endswith("." + allowed) for allowed in self.hosts)


def media_policy(settings: Settings) -> MediaPolicy:
    origins = set()
    for base in (settings.graph_api_base_url, settings.instagram_api_base_url):
        parts = urlsplit(base)
        if parts.hostname:
            origins.add((parts.scheme, parts.hostname.lower(), parts.port))
    return MediaPolicy(
        max_bytes=settings.parley_media_max_bytes,
        timeout=settings.parley_media_timeout,
        origins=frozenset(origins),
    )


async def fetch_media(
    channel: Channel,
    client: httpx.AsyncClient,
    media: Media,
    *,
    token: str | None,
    settings: Settings,
) -> Downloaded:
    """`media` downloaded through `channel`, within the settings' limits.

    A URL from a media id lives a few minutes (WhatsApp): a 404 on it is answered by asking
    the channel for a fresh one, once.

    Raises:
        MediaUnavailable: refused (host, size, type) or not fetched (gone, timeout, error).
    """
    policy = media_policy(settings)
    kinds = accepted_types(media.kind)
    if not kinds:
        raise MediaUnavailable("wrong_type", f"{media.kind} files are not downloaded")
    try:
        async with asyncio.timeout(policy.timeout):
            return await _fetch(channel, client, media, token, settings, policy)
    except TimeoutError:
        raise MediaUnavailable("timeout", f"over {policy.timeout:g}s") from None


async def _fetch(
    channel: Channel,
    client: httpx.AsyncClient,
    media: Media,
    token: str | None,
    settings: Settings,
    policy: MediaPolicy,
) -> Downloaded:
    for attempt in (1, 2):
        url = await channel.media_url(
            client, media, token=token, settings=settings, timeout=policy.timeout
        )
        if not url:
            raise MediaUnavailable("not_found", "no URL for the file")
        try:
            return await download(client, url, kind=media.kind, token=token, policy=policy)
        except MediaUnavailable as exc:
            if exc.reason != "not_found" or not media.media_id or attempt == 2:
                raise
            log.info("media.url_expired", channel=channel.name)
    raise AssertionError("unreachable")


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    kind: str,
    token: str | None,
    policy: MediaPolicy,
) -> Downloaded:
    """The file at `url`, if its host is allowed, its type is one `kind` takes and it fits in
    `policy.max_bytes`; redirects are followed by hand, each target checked first.

    Raises:
        MediaUnavailable: as `fetch_media`.
    """
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        if not policy.allows(url):
            raise MediaUnavailable("host_not_allowed", _host(url))
        # The token goes only to the host the fetch began on; a CDN URL it redirects to is
        # signed already.
        headers = {"Authorization": f"Bearer {token}"} if token and _origin(url) == origin else {}
        try:
            request = client.build_request("GET", url, headers=headers, timeout=policy.timeout)
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise MediaUnavailable("timeout", _host(url)) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise MediaUnavailable("unavailable", type(exc).__name__) from None
        try:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            return await _body(response, kind, policy)
        finally:
            await response.aclose()
    raise MediaUnavailable("unavailable", "too many redirects")


async def _body(response: httpx.Response, kind: str, policy: MediaPolicy) -> Downloaded:
    if response.status_code in (404, 410):
        raise MediaUnavailable("not_found", f"HTTP {response.status_code}")
    if not response.is_success:
        raise MediaUnavailable("unavailable", f"HTTP {response.status_code}")
    declared = bare_type(response.headers.get("content-type"))
    accepted = accepted_types(kind)
    if declared not in GENERIC_TYPES and declared not in accepted:
        raise MediaUnavailable("wrong_type", declared)
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise MediaUnavailable("too_large", f"{length} bytes")
    data = await _read_capped(response, policy.max_bytes)
    return Downloaded(data=data, content_type=_checked_type(data, declared, kind, accepted))


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, read until it ends or passes `max_bytes` (a missing or lying Content-Length
    must not let a file fill the memory)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise MediaUnavailable("too_large", f"over {max_bytes} bytes")
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise MediaUnavailable("timeout", "reading the body") from None
    except httpx.HTTPError as exc:
        raise MediaUnavailable("unavailable", type(exc).__name__) from None
    if not size:
        raise MediaUnavailable("not_found", "empty body")
    return b"".join(chunks)


def _checked_type(data: bytes, declared: str, kind: str, accepted: frozenset[str]) -> str:
    """The type the file is sent on as. An image must show an image's signature: the model
    is given the type in its data URL, and bytes that are not an image are no use to it."""
    sniffed = sniff(data)
    if kind in ("image", "sticker"):
        if sniffed is None or sniffed not in accepted:
            raise MediaUnavailable("wrong_type", f"not an image ({declared or 'no type'})")
        return sniffed
    if declared in GENERIC_TYPES:
        if sniffed is None or sniffed not in accepted:
            raise MediaUnavailable("wrong_type", f"unrecognised {kind}")
        return sniffed
    return declared


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme, (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", "", None


def _host(url: str) -> str:
    """The host alone, for a log line: a signed URL's query is a credential."""
    return _origin(url)[1] or "no host"
