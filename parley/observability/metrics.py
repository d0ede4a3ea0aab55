"""Prometheus metrics, served at /metrics. Names follow `parley_<noun>_<unit>_total`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_MESSAGES = Counter(
    "parley_webhook_messages_total",
    "Inbound messages filed from acknowledged webhooks",
    ["channel"],
)
TURNS = Counter("parley_turns_total", "Agent turns by outcome", ["outcome"])
TURN_SECONDS = Histogram(
    "parley_turn_seconds",
    "Upstream latency of an agent turn",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
SENDS = Counter("parley_sends_total", "Channel sends by outcome", ["channel", "outcome"])
WEBHOOKS_ACKNOWLEDGED = Counter(
    "parley_webhooks_acknowledged_total",
    "Webhook bodies committed to the inbox and answered 200",
    ["channel"],
)
INBOX_COMMITS = Counter("parley_inbox_commits_total", "Group commits of webhook bodies")
INBOX_UNREADABLE = Counter(
    "parley_inbox_unreadable_total", "Inbox rows the filer could not read, kept for audit"
)
