"""Prometheus metrics, served at `/metrics` (`serve`, `api`, and `parley worker --metrics-port`).

Names follow `parley_<noun>_<unit>` (`_total` for counters). Every label set is bounded: a
channel, an outcome, a model, a Graph error code; never a phone number, contact or
conversation id. The registry is the process's default one: each process counts what it does
(the webhook door in `api`, turns and sends in `worker`, both in `serve`), and Prometheus sums
the processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- The webhook door ---------------------------------------------------------------------

WEBHOOKS = Counter(
    "parley_webhooks_total",
    "Webhook POSTs by channel and outcome (accepted, bad_signature, not_configured, too_large, "
    "unreadable, unavailable)",
    ["channel", "outcome"],
)
WEBHOOK_OUTCOMES = (
    "accepted",
    "bad_signature",
    "not_configured",
    "too_large",
    "unreadable",
    "unavailable",
)
WEBHOOK_ACK_SECONDS = Histogram(
    "parley_webhook_ack_seconds",
    "From a webhook's arrival to its 200, the body committed to the inbox",
    ["channel"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INBOX_COMMITS = Counter("parley_inbox_commits_total", "Group commits of webhook bodies")

# --- Filing -------------------------------------------------------------------------------

WEBHOOK_MESSAGES = Counter(
    "parley_webhook_messages_total",
    "Inbound messages filed from acknowledged webhooks",
    ["channel"],
)
INBOX_UNREADABLE = Counter(
    "parley_inbox_unreadable_total", "Inbox rows the filer could not read, kept for audit"
)

# --- Backlog (sampled by a periodic query, see `observability.backlog`) --------------------

QUEUE_DEPTH = Gauge(
    "parley_queue_depth",
    "Inbound messages waiting for an answer (status received), across all workers",
)
QUEUE_OLDEST_SECONDS = Gauge(
    "parley_queue_oldest_seconds",
    "Age of the oldest inbound message waiting for an answer: the signal to autoscale on",
)
INBOX_BACKLOG = Gauge(
    "parley_inbox_backlog",
    "Acknowledged webhook bodies not filed yet",
)
INBOX_OLDEST_SECONDS = Gauge(
    "parley_inbox_oldest_seconds",
    "Age of the oldest acknowledged webhook body not filed yet",
)
BACKLOG_SAMPLED = Gauge(
    "parley_backlog_sampled_timestamp_seconds",
    "When the backlog gauges were last read from the store (Unix time)",
)

# --- Turns --------------------------------------------------------------------------------

TURNS = Counter(
    "parley_turns_total",
    "A channel conversation's turns by outcome (answered, failed, refused, unsupported, "
    "ignored, rate_limited, dead_lettered)",
    ["outcome"],
)
TURN_SECONDS = Histogram(
    "parley_turn_seconds",
    "Wall time of a channel turn by outcome, from reading its messages to storing its answer",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
UPSTREAM_SECONDS = Histogram(
    "parley_upstream_seconds",
    "Latency of one upstream Responses API call (from the call, not the wait for a slot)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
UPSTREAM_ERRORS = Counter(
    "parley_upstream_errors_total",
    "Upstream calls that failed after the SDK's retries, by whether a retry could help",
    ["retryable"],
)
TOKENS = Counter(
    "parley_tokens_total",
    "Upstream tokens by kind (input, output, cached, reasoning) and model",
    ["kind", "model"],
)
COST_USD = Counter("parley_cost_usd_total", "Estimated upstream cost in US dollars", ["model"])

# --- Delivery -----------------------------------------------------------------------------

SENDS = Counter(
    "parley_sends_total",
    "Channel sends by outcome (sent, retry, held, failed) and the channel's error code",
    ["channel", "outcome", "code"],
)
DEAD_LETTERS = Counter(
    "parley_dead_letters_total",
    "Messages given up on: turns that kept dying, or sends that could not be made",
    ["stage"],
)
HANDOFFS = Counter(
    "parley_handoffs_total",
    "Conversations handed to a person, by reason (agent, app_echo, operator)",
    ["reason"],
)


def count_handoff(reason: str) -> None:
    """One conversation went to a person. `reason` is a fixed word (agent, app_echo,
    operator), never free text: it becomes a label."""
    HANDOFFS.labels(reason).inc()


def count_usage(model: str, *, tokens: dict[str, int], cost_usd: float | None) -> None:
    """A turn's tokens by kind and its cost, under the model that answered."""
    for kind, count in tokens.items():
        if count:
            TOKENS.labels(kind, model).inc(count)
    if cost_usd:
        COST_USD.labels(model).inc(cost_usd)
