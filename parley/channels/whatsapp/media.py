"""A WhatsApp media id → the URL its file is downloaded from.

``GET {GRAPH_API_BASE_URL}/{version}/{media_id}`` with the account's token answers
``{url, mime_type, sha256, file_size, id}``; the URL lives about five minutes and needs the
same token (`channels.download` fetches it). Media ids in webhooks stay valid for 7 days.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from parley.channels.graph_path import segment
from parley.errors import MediaUnavailable

__all__ = ["media_url"]

log = structlog.get_logger(__name__)


async def media_url(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    version: str,
    media_id: str,
    token: str | None,
    timeout: float,
) -> str:
    """The download URL of `media_id`.

    Raises:
        MediaUnavailable: ``no_token``, ``not_found`` (unknown or expired id), ``timeout``,
            ``unavailable`` (any other refusal, the token's included: logged with its code).
    """
    if not token:
        raise MediaUnavailable("no_token", "no WhatsApp access token")
    try:
        response = await client.get(
            f"{base_url}/{version}/{segment(media_id)}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        raise MediaUnavailable("timeout", "media lookup") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise MediaUnavailable("unavailable", type(exc).__name__) from None
    answer = _json(response)
    if not response.is_success:
        code = _error_code(answer)
        log.warning("whatsapp.media_lookup_failed", status=response.status_code, code=code)
        reason = "not_found" if response.status_code == 404 or code == "100" else "unavailable"
        raise MediaUnavailable(reason, f"lookup HTTP {response.status_code} code {code}")
    url = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url:
        raise MediaUnavailable("unavailable", "lookup answer has no url")
    return url


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_code(answer: Any) -> str | None:
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return None if code is None else str(code)
