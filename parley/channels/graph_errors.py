"""Meta's Graph API error codes, shared by the channels that send through it (WhatsApp,
Messenger, Instagram): what each means for delivery, and a reason a person can read.

The same codes come back two ways: in the answer to a send (``{"error": {"code",
"error_subcode", "message"}}``) and later in a ``failed`` status webhook (WhatsApp's
``statuses[].errors[]``); both are read here, so a code means the same thing wherever it
arrives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from parley.channels.base import SendFailure
from parley.errors import RETRYABLE_KINDS, ChannelSendError, FailureKind

__all__ = ["READABLE", "classify", "graph_error", "status_error"]

THROTTLED_CODES = frozenset({"4", "17", "32", "613", "80007", "130429"})
"""Application, user, page, call-count and WhatsApp-account throughput limits."""
TRANSIENT_CODES = frozenset({"1", "2", "131000", "131016", "131057", "133004"})
"""Unknown, temporary and service-unavailable errors, and a number in maintenance."""
WINDOW_CODES = frozenset({"131047"})
WINDOW_SUBCODES = frozenset({"2018278", "2018109", "2018001"})
"""Messenger's and Instagram's code 10 subcodes for a send outside the allowed window."""
UNDELIVERABLE_CODES = frozenset({"131026", "551"})
INVALID_RECIPIENT_CODES = frozenset({"131030"})
INVALID_RECIPIENT_SUBCODES = frozenset({"2018001", "2534014"})
"""Code 100 subcodes for a recipient id no user has (Messenger, Instagram)."""
TOKEN_CODES = frozenset({"190", "102"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})

_WINDOW_TEXT = re.compile(r"outside (of )?(the )?allowed window|24 hours", re.IGNORECASE)

READABLE = {
    FailureKind.THROTTLED: "the account's send rate was reached",
    FailureKind.RECIPIENT_THROTTLED: "too many messages to this customer in a short time",
    FailureKind.TRANSIENT: "the channel had a temporary problem",
    FailureKind.WINDOW_CLOSED: (
        "outside the customer-service window (the customer last wrote more than 24 hours "
        "ago; only a template or a tagged message can reach them now)"
    ),
    FailureKind.UNDELIVERABLE: "the customer cannot receive messages from this account",
    FailureKind.INVALID_RECIPIENT: "the recipient is not a user this account can message",
    FailureKind.TOKEN: "the account's access token is expired or invalid",
    FailureKind.REJECTED: "the channel refused the message",
}
"""What each kind of failure means, in the words stored with a failed message."""


def classify(
    *, code: str | None, subcode: str | None = None, status: int | None = None, text: str = ""
) -> FailureKind:
    """The kind of a Graph error, from its code (and subcode), else its HTTP status."""
    if code in TOKEN_CODES:
        return FailureKind.TOKEN
    if code == "131056":
        return FailureKind.RECIPIENT_THROTTLED
    if code in THROTTLED_CODES or status == 429:
        return FailureKind.THROTTLED
    if code in WINDOW_CODES or (
        code == "10" and (subcode in WINDOW_SUBCODES or _WINDOW_TEXT.search(text))
    ):
        return FailureKind.WINDOW_CLOSED
    if code in UNDELIVERABLE_CODES:
        return FailureKind.UNDELIVERABLE
    if code in INVALID_RECIPIENT_CODES or (code == "100" and subcode in INVALID_RECIPIENT_SUBCODES):
        return FailureKind.INVALID_RECIPIENT
    if code in TRANSIENT_CODES or (status is not None and status in RETRYABLE_STATUSES):
        return FailureKind.TRANSIENT
    if status is not None and status >= 500:
        return FailureKind.TRANSIENT
    return FailureKind.REJECTED


def graph_error(
    error: Mapping[str, Any],
    *,
    status: int | None,
    detail: str,
    retry_after: float | None = None,
) -> ChannelSendError:
    """A Graph ``error`` object (from a send's answer or a status webhook) as the error
    delivery acts on; `detail` is the channel's own words, already stripped of secrets."""
    code = _text(error.get("code"))
    subcode = _text(error.get("error_subcode"))
    text = f"{error.get('message') or ''} {detail}"
    kind = classify(code=code, subcode=subcode, status=status, text=text)
    retryable = kind in RETRYABLE_KINDS
    where = " ".join(str(part) for part in ("graph", status, code) if part is not None)
    if subcode:
        where += f"/{subcode}"
    return ChannelSendError(
        f"{READABLE[kind]} ({where}: {detail})",
        retryable=retryable,
        retry_after=retry_after if retryable else None,
        status=status,
        code=code,
        kind=kind,
    )


def status_error(errors: Sequence[Mapping[str, Any]]) -> ChannelSendError:
    """The first error of a ``failed`` status webhook as the error delivery acts on."""
    first = errors[0] if errors else {}
    data = first.get("error_data")
    details = data.get("details") if isinstance(data, Mapping) else None
    words = [str(first.get("title") or first.get("message") or "failed, no reason given")]
    if details and str(details) not in words[0]:
        words.append(str(details))
    return graph_error(first, status=None, detail=": ".join(words)[:300])


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


MAX_RETRY_AFTER = 60.0
"""Seconds: a longer Retry-After would park a conversation; the delivery layer backs off."""


_RETRYABLE_TRANSPORT = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
_MAX_DETAIL = 300


def classify_failure(failure: SendFailure, token: str) -> ChannelSendError:
    """A Graph error answer or a failed transport as a `ChannelSendError` of the kind its code
    means (`classify`), for every Meta channel's sends: throttling, 5xx and network trouble
    are retryable (after Retry-After, within bounds); the rest is final. The token is cut out
    of Graph's words, which sometimes quote it."""
    if isinstance(failure, httpx.Response):
        return _http_error(failure, token)
    return _transport_error(failure)


def _transport_error(exc: Exception) -> ChannelSendError:
    what = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport error"
    retryable = isinstance(exc, _RETRYABLE_TRANSPORT)
    kind = FailureKind.TRANSIENT if retryable else FailureKind.REJECTED
    return ChannelSendError(
        f"{READABLE[kind]} (graph {what}: {type(exc).__name__})", retryable=retryable, kind=kind
    )


def _http_error(response: httpx.Response, token: str) -> ChannelSendError:
    error = _graph_error(response)
    detail = _redact(str(error.get("message") or response.reason_phrase or "error"), token)
    retry_after = _retry_after(response.headers.get("retry-after"))
    return graph_error(error, status=response.status_code, detail=detail, retry_after=retry_after)


def _graph_error(response: httpx.Response) -> dict[str, Any]:
    """Graph's ``{"error": {code, message, …}}``, or nothing when a proxy answered instead."""
    answer = json_or_none(response)
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else {}


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _redact(detail: str, token: str) -> str:
    # Graph may quote a malformed token back; it must not reach a stored error.
    if token:
        detail = detail.replace(token, "[token]")
    return detail[:_MAX_DETAIL]


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), within 0..MAX_RETRY_AFTER."""
    if not value:
        return None
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()
