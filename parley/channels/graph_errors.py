"""Meta's Graph API error codes, shared by the channels that send through it (WhatsApp,
Messenger, Instagram): what each means for delivery, and a reason a person can read.

The same codes come back two ways: in the answer to a send (``{"error": {"code",
"error_subcode", "message"}}``) and later in a ``failed`` status webhook (WhatsApp's
``statuses[].errors[]``); both are read here, so a code means the same thing wherever it
arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

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
