"""Every Redis key the queue uses, all under `parley:`, and the Lua scripts that touch several
of them at once: the layout to audit for Redis Cluster, in one place.

The keys of one conversation share the hash tag `{conv:<id>}`, so a script that touches the
lease, the "signalled again" flag and the "queued" marker together runs on one Cluster slot.
The signal stream is one key of its own; no script or transaction touches it together with a
conversation's keys, and none touches two conversations.
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


# The scripts, all within one conversation's hash tag. See `parley.queue.redis` for why.

# KEYS: lease, again, queued. ARGV: again_ttl_ms, dedupe_ms.
# Returns 1 when the caller must add a stream entry.
SIGNAL_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 0
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: lease, again, queued. ARGV: consumer, lease_ms, flag_if_held, again_ttl_ms.
# Returns {1, 0} when the lease is now ours; {0, <the lease's PTTL>} when someone (possibly
# this consumer) holds it, after setting the "again" flag if flag_if_held is 1.
TAKE_SCRIPT = """
redis.call('DEL', KEYS[3])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} end
if ARGV[3] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[4]) end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease. ARGV: consumer, lease_ms. Returns 1 renewed, 2 taken back, 0 lost to another.
RENEW_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: lease, again. ARGV: consumer. Returns 1 when the conversation must be signalled again.
# A lease someone else holds now is left alone, and so is the flag: their release handles it.
RELEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  holder = false
end
if holder then return 0 end
return redis.call('DEL', KEYS[2])
"""


# Outside the queue: the Responses API's per-token rate limit.


def api_rate(token_key: str, window: int) -> str:
    """Requests one caller (a user: `user:<id>`) made in one fixed window (a counter with a
    TTL); the hash tag keeps a caller's counters on one Cluster slot."""
    return f"{PREFIX}ratelimit:{{token:{token_key}}}:{window}"


def send_pace(account_key: str) -> str:
    """When an account's next send may go (its theoretical arrival time, in microseconds of
    Redis's clock); one key per account, on its own Cluster slot."""
    return f"{PREFIX}pace:{{account:{account_key}}}"


# KEYS[1] = send_pace(account). ARGV: interval_us, max_wait_us, pause_us.
# With pause_us = 0, reserve the account's next slot if it is at most max_wait_us away and
# return {1, wait_us}; else reserve nothing and return {0, wait_us}. With pause_us > 0, push
# the next slot to at least now + pause_us (the channel said the account sends too fast).
# Redis's own clock, so every process agrees on "now".
PACE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local pause = tonumber(ARGV[3])
local next_at = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > 0 then
  next_at = math.max(next_at, now + pause)
  redis.call('SET', KEYS[1], string.format('%.0f', next_at), 'PX', math.ceil(pause / 1000) + 1000)
  return {1, 0}
end
local start = math.max(next_at, now)
local wait = start - now
if wait > max_wait then
  return {0, wait}
end
local after = start + interval
local ttl = math.ceil((after - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', ttl)
return {1, wait}
"""
