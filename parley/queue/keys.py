"""Every Redis key the queue uses, in one place, all under `parley:`.

The keys of one conversation share the hash tag `{conv:<id>}`, so a script that touches the
lease, the "signalled again" flag and the "queued" marker together runs on one Redis Cluster
slot. The signal stream is one key of its own; no script or transaction touches it together
with a conversation's keys.
"""

from __future__ import annotations

PREFIX = "parley:"

STREAM = f"{PREFIX}queue:signals"
"""The stream of signals: one entry `{c: <conversation id>}` per "conversation X has work"."""

GROUP = "parley-workers"
"""The consumer group every worker reads the stream through."""

FIELD = "c"
"""The stream entry's field that holds the conversation id."""


def _tag(conversation_id: int) -> str:
    return f"{PREFIX}{{conv:{conversation_id}}}"


def lease(conversation_id: int) -> str:
    """Who holds the conversation: the consumer's name, with a TTL renewed while it runs."""
    return f"{_tag(conversation_id)}:lease"


def again(conversation_id: int) -> str:
    """Set when the conversation was signalled while held; its holder re-signals on release."""
    return f"{_tag(conversation_id)}:again"


def queued(conversation_id: int) -> str:
    """Set while a signal for the conversation waits in the stream, to drop duplicates."""
    return f"{_tag(conversation_id)}:queued"
