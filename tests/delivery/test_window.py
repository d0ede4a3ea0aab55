"""may_send: the reply window policy, for the agent and for a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parley.channels.base import META_WINDOW, META_WINDOW_WITH_HUMAN_AGENT, ReplyWindow
from parley.delivery.window import HUMAN_AGENT, may_send

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def ago(**span: float) -> datetime:
    return NOW - timedelta(**span)


@pytest.mark.parametrize("window", [META_WINDOW, META_WINDOW_WITH_HUMAN_AGENT])
@pytest.mark.parametrize("sender", ["agent", "operator", "system"])
def test_within_24_hours_anything_goes_untagged(window: ReplyWindow, sender: str) -> None:
    permission = may_send(window=window, sender=sender, last_customer_at=ago(hours=23.9), now=NOW)
    assert (permission.allowed, permission.tag) == (True, None)


@pytest.mark.parametrize("window", [META_WINDOW, META_WINDOW_WITH_HUMAN_AGENT])
def test_the_agent_does_not_try_after_24_hours(window: ReplyWindow) -> None:
    permission = may_send(window=window, sender="agent", last_customer_at=ago(hours=25), now=NOW)
    assert not permission.allowed
    assert permission.reason is not None
    assert "outside the customer-service window" in permission.reason
    assert "25 h ago" in permission.reason


def test_a_person_answers_within_7_days_with_the_human_agent_tag() -> None:
    for age in (timedelta(hours=25), timedelta(days=6, hours=23)):
        permission = may_send(
            window=META_WINDOW_WITH_HUMAN_AGENT,
            sender="operator",
            last_customer_at=NOW - age,
            now=NOW,
        )
        assert (permission.allowed, permission.tag) == (True, HUMAN_AGENT)


def test_a_person_after_7_days_is_refused() -> None:
    permission = may_send(
        window=META_WINDOW_WITH_HUMAN_AGENT,
        sender="operator",
        last_customer_at=ago(days=7, minutes=1),
        now=NOW,
    )
    assert not permission.allowed
    assert permission.reason is not None and "more than 7 days" in permission.reason


def test_whatsapp_has_no_human_agent_tag() -> None:
    permission = may_send(
        window=META_WINDOW, sender="operator", last_customer_at=ago(hours=30), now=NOW
    )
    assert not permission.allowed


def test_no_customer_message_means_no_reply_and_no_window_means_no_limit() -> None:
    assert not may_send(window=META_WINDOW, sender="agent", last_customer_at=None, now=NOW).allowed
    assert may_send(window=None, sender="agent", last_customer_at=None, now=NOW).allowed
