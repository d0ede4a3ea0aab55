"""The Graph simulator's media: WhatsApp's media ids and the loopback "CDN" their files (and
Instagram's and Messenger's attachment URLs) are served from.

- ``GET /{version}/{media_id}`` (Bearer) → ``{url, mime_type, sha256, file_size, id,
  messaging_product}``, as WhatsApp answers; an unknown id is Graph's error 100 with a 404.
- ``GET /cdn/media/{key}`` → the bytes, with the Bearer token for WhatsApp's files (Meta
  refuses a download without it) and without for attachment URLs (they are signed).

Faults are set per file (`add`): a content type other than the one the lookup reports, a
body sent without Content-Length (to prove a size cap is kept while reading), a redirect, a
lookup URL that points somewhere else. The simulator's own `inject` / `inject_timeout` work
on `path_of(media_id)` like on any path.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from parley.testing.faults import ApiError, Recorded, bearer_token

__all__ = ["MediaFiles", "SimMedia"]

CDN_PREFIX = "/cdn/media/"
CHUNK = 64 * 1024


@dataclass
class SimMedia:
    media_id: str
    data: bytes
    mime_type: str
    """What the lookup reports."""
    key: str
    content_type: str | None = None
    """What the download is served as, when it differs from `mime_type` (a fault)."""
    url: str | None = None
    """What the lookup answers as `url`, instead of this simulator's CDN path (a fault)."""
    chunked: bool = False
    """Sent without Content-Length, in chunks."""
    redirect_to: str | None = None
    """The CDN answers 302 to this instead of the bytes."""
    needs_token: bool = True


class MediaFiles:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, SimMedia] = {}
        self._by_key: dict[str, SimMedia] = {}
        self._ids = itertools.count(1)

    def add(
        self,
        data: bytes,
        mime_type: str,
        *,
        media_id: str | None = None,
        content_type: str | None = None,
        url: str | None = None,
        chunked: bool = False,
        redirect_to: str | None = None,
        needs_token: bool = True,
    ) -> str:
        media_id = media_id or f"{9_000_000_000 + next(self._ids)}"
        media = SimMedia(
            media_id=media_id,
            data=data,
            mime_type=mime_type,
            key=secrets.token_urlsafe(12),
            content_type=content_type,
            url=url,
            chunked=chunked,
            redirect_to=redirect_to,
            needs_token=needs_token,
        )
        with self._lock:
            self._by_id[media_id] = media
            self._by_key[media.key] = media
        return media_id

    def path_of(self, media_id: str) -> str:
        """The CDN path the file is downloaded from (for `inject` and attachment URLs)."""
        with self._lock:
            return CDN_PREFIX + self._by_id[media_id].key

    def has(self, media_id: str) -> bool:
        with self._lock:
            return media_id in self._by_id

    def reset(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._by_key.clear()

    async def lookup(self, request: Request, record: Recorded) -> Response:
        """``GET /{version}/{media_id}`` (authorised by the caller)."""
        media_id = request.path_params["node"]
        with self._lock:
            media = self._by_id.get(media_id)
        if media is None:
            raise ApiError(
                404,
                f"Unsupported get request. Object with ID '{media_id}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation.",
                code=100,
                error_subcode=33,
            )
        record.kind = "media_lookup"
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": media.url or f"{base}{CDN_PREFIX}{media.key}?ext={secrets.token_hex(4)}",
                "mime_type": media.mime_type,
                "sha256": base64.b64encode(hashlib.sha256(media.data).digest()).decode(),
                "file_size": len(media.data),
                "id": media.media_id,
            }
        )

    async def download(self, request: Request, record: Recorded) -> Response:
        """``GET /cdn/media/{key}``."""
        with self._lock:
            media = self._by_key.get(request.path_params["key"])
        if media is None:
            raise ApiError(404, "Not found", code=100)
        if media.needs_token and bearer_token(request) is None:
            raise ApiError(401, "An active access token must be used.", code=190)
        record.kind = "media_download"
        if media.redirect_to:
            return RedirectResponse(media.redirect_to, status_code=302)
        content_type = media.content_type or media.mime_type
        if media.chunked:
            return StreamingResponse(_chunks(media.data), media_type=content_type)
        return Response(media.data, media_type=content_type)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
