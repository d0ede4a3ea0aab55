-- wrk script for bench/ingest.py: POSTs pre-signed WhatsApp webhooks, one body per request.
--
-- wrk's Lua cannot compute an HMAC, so the Python script writes the bodies and their
-- signatures to a file, one "signature<TAB>body" per line, and this script cycles through
-- them. Settings come from the environment because wrk runs a script's top level (where
-- `delay` must be defined, or not) before it hands over the arguments:
--   BENCH_BODIES  the file of signed bodies
--   BENCH_PATH    the path to POST to (default /webhooks/whatsapp)
--   BENCH_RATE    requests per second over all connections; 0 or unset: as fast as possible
--   BENCH_WRAP    "1": start over when the bodies run out (the bare reference does not
--                 deduplicate); otherwise stop wrk, so Parley never sees a message id twice
-- wrk's own summary counts only statuses over 399 as errors, so this script counts every
-- status itself, and prints one machine-readable line, "BENCH_JSON {...}", at the end.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local wrap = os.getenv("BENCH_WRAP") == "1"
local threads = {}

-- Per-thread state (each wrk thread has its own Lua state; bench/ingest.py runs one).
prepared, issued, exhausted = {}, 0, false
statuses, late, late_max_ms = {}, 0, 0
-- When the bodies run out wrk still waits out its duration, so the rate is taken over the
-- span from the first request to the last answer instead.
first_ms, last_ms = 0, 0
local slot, start_ms = 0, nil

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_PATH") or "/webhooks/whatsapp"
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    local signature, body = line:match("^([^\t]+)\t(.*)$")
    local headers = { ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = signature }
    prepared[#prepared + 1] = wrk.format("POST", path, headers, body)
  end
  if #prepared == 0 then
    error("no bodies in " .. tostring(os.getenv("BENCH_BODIES")))
  end
end

function request()
  if issued >= #prepared and not wrap then
    -- Out of distinct bodies: stop rather than send a message id twice. wrk still needs a
    -- request for this connection; a GET of the liveness probe changes nothing.
    exhausted = true
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  if issued == 0 then
    first_ms = now_ms()
  end
  local index = issued % #prepared + 1
  issued = issued + 1
  return prepared[index]
end

if rate > 0 then
  -- A fixed rate over all connections: request k is due at start + k/rate. wrk asks delay()
  -- before each request on a connection; a connection that frees up after its slot has
  -- passed sends at once and the lateness is counted (a backlog the latency figures miss).
  local interval = 1000 / rate
  function delay()
    local now = now_ms()
    start_ms = start_ms or now
    local due = start_ms + slot * interval
    slot = slot + 1
    if due < now then
      if now - due > 10 then
        late = late + 1
      end
      late_max_ms = math.max(late_max_ms, now - due)
      return 0
    end
    return math.floor(due - now + 0.5)
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  last_ms = now_ms()
end

function done(summary, latency, requests)
  local counts, sent, late_sum, late_max, ran_out, span = {}, 0, 0, 0, false, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    sent = sent + thread:get("issued")
    late_sum = late_sum + thread:get("late")
    late_max = math.max(late_max, thread:get("late_max_ms"))
    ran_out = ran_out or thread:get("exhausted")
    span = math.max(span, thread:get("last_ms") - thread:get("first_ms"))
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "completed": %d, "issued": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
    '"late": %d, "late_max_ms": %.1f, "exhausted": %s, "span_ms": %.1f}\n',
    summary.duration, summary.requests, sent, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, late_sum, late_max, tostring(ran_out), span))
end
