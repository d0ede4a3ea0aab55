"""Whether a reply may still go out, by the channel's window since the customer last wrote.

A pure function, so the policy is read and tested in one place: delivery asks it before every
send (a reply held by backoff may outlive the window), and the answer says what to send with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from parley.channels.base import ReplyWindow

__all__ = ["HUMAN_AGENT", "OPERATOR", "Permission", "may_send"]

HUMAN_AGENT = "HUMAN_AGENT"
"""The message tag that lets a person (not a bot) answer after the standard window."""
OPERATOR = "operator"
"""The `sender` of a message a person wrote (an operator), as the store names it."""


@dataclass(frozen=True, slots=True)
class Permission:
    allowed: bool
    tag: str | None = None
    """The message tag to send with, when the standard window alone would not allow it."""
    reason: str | None = None
    """Why not, for the message's stored error."""


def may_send(
    *,
    window: ReplyWindow | None,
    sender: str,
    last_customer_at: datetime | None,
    now: datetime,
) -> Permission:
    """Whether a reply by `sender` may go out `now`, the customer having last written at
    `last_customer_at` (None: never, in this conversation).

    Within the standard window anything goes untagged. After it, only a person's reply on a
    channel with a human-agent window, within that window, tagged `HUMAN_AGENT`. An agent's
    reply after the standard window is not tried at all: the channel would refuse it.
    """
    if window is None:
        return Permission(True)
    if last_customer_at is None:
        return Permission(
            False, reason="not sent: the customer has not written in this conversation"
        )
    age = now - last_customer_at
    if age <= window.standard:
        return Permission(True)
    if sender == OPERATOR and window.human_agent is not None and age <= window.human_agent:
        return Permission(True, tag=HUMAN_AGENT)
    hours = int(age.total_seconds() // 3600)
    limit = window.human_agent if sender == OPERATOR and window.human_agent else window.standard
    return Permission(
        False,
        reason=(
            f"not sent: outside the customer-service window (the customer last wrote {hours} h "
            f"ago, more than {_duration(limit)}); only a template can reach them now"
        ),
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0 and seconds >= 86400 * 2:
        return f"{seconds // 86400} days"
    return f"{seconds // 3600} hours"
