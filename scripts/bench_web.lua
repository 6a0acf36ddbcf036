-- wrk script for scripts/bench_web.py: POST /api/jobs with a bearer token, one token per wrk
-- thread (bench_web.py runs one connection per thread, so one token per client).
--
--   BENCH_TOKENS=jq_a,jq_b BENCH_BODY='{"queue":"bench","kind":"noop"}' \
--     wrk -t2 -c2 -d5s -s scripts/bench_web.lua http://127.0.0.1:8000/api/jobs
--
-- Thread i uses token i (modulo their number). Every response status is counted per thread,
-- and done() prints one line, "BENCH_JSON {...}", with the counts and the latency percentiles
-- in microseconds, which bench_web.py parses.

local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  tokens[#tokens + 1] = token
end
local body = os.getenv("BENCH_BODY") or '{"queue":"bench","kind":"noop","payload":{}}'
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

function init(args)
  if #tokens == 0 then
    error("BENCH_TOKENS is empty: pass comma-separated API tokens")
  end
  local token = tokens[(thread_index - 1) % #tokens + 1]
  req = wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
  statuses = {}
end

function request()
  return req
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses")
    if seen then
      for status, n in pairs(seen) do
        counts[status] = (counts[status] or 0) + n
      end
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%s":%d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"threads":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"statuses":{%s}}\n',
    summary.duration, summary.requests, summary.bytes, #threads,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ",")))
end
