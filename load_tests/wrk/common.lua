-- Shared by the scenario scripts: settings from the environment, unique keys per thread,
-- and a done() that prints one JSON line the benchmark runner parses.
--
-- Environment: LAB_CLIENT_KEY (decide's bearer key), LAB_KNOWN_UNITS (how many seeded
-- units to draw from), LAB_KNOWN_OFFSET (the first one's number, default 0: bench-000000000),
-- LAB_UNIT_PREFIX (default "bench-"), LAB_UNIT_DIGITS
-- (default 9), LAB_RUN_NONCE (makes new unit keys unique across runs), LAB_BATCH_SIZE,
-- LAB_OFREP_FLAG (the experiment key OFREP evaluates).

local M = {}

M.client_key = os.getenv("LAB_CLIENT_KEY") or "lck_missing_key"
M.known_units = tonumber(os.getenv("LAB_KNOWN_UNITS") or "1")
M.known_offset = tonumber(os.getenv("LAB_KNOWN_OFFSET") or "0")
M.unit_prefix = os.getenv("LAB_UNIT_PREFIX") or "bench-"
M.unit_digits = tonumber(os.getenv("LAB_UNIT_DIGITS") or "9")
M.nonce = os.getenv("LAB_RUN_NONCE") or tostring(os.time())
M.batch_size = tonumber(os.getenv("LAB_BATCH_SIZE") or "1000")
M.ofrep_flag = os.getenv("LAB_OFREP_FLAG") or "exp-a"

M.headers = {
  ["Authorization"] = "Bearer " .. M.client_key,
  ["Content-Type"] = "application/json",
}

local unit_format = "%s%0" .. M.unit_digits .. "d"

function M.known_unit()
  return string.format(unit_format, M.unit_prefix,
    M.known_offset + math.random(0, M.known_units - 1))
end

-- setup() runs in the main Lua state once per thread: give each thread its number, so
-- the new unit keys of two threads never collide.
local thread_count = 0
function M.setup(thread)
  thread:set("thread_number", thread_count)
  thread_count = thread_count + 1
end

local counter = 0
function M.new_unit()
  counter = counter + 1
  return "new-" .. M.nonce .. "-" .. (thread_number or 0) .. "-" .. counter
end

function M.init(args)
  math.randomseed(os.time() + 7919 * ((thread_number or 0) + 1))
end

-- One JSON line (prefixed, so the runner finds it among wrk's own output).
function M.done(summary, latency, requests)
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_s": %.6f, "rps": %.3f, "bytes": %d, '
      .. '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, '
      .. '"max_ms": %.3f, "mean_ms": %.3f, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, latency.mean / 1000,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end

return M
