-- A production line: units arrive, each is decided LAB_LINE_MIN..LAB_LINE_MAX times in all
-- (default 3-5), the repeats at random whole seconds within the next LAB_LINE_WINDOW
-- seconds (default 3), then never again. A unit's first decision is a new unit's (its
-- assignments are stored); the repeats are a known unit's, taken by whichever worker gets
-- the request. Repeats that are due go first; otherwise a new unit arrives. So the first
-- window of a run has more arrivals than the rest (no repeats are due yet).
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

local window = tonumber(os.getenv("LAB_LINE_WINDOW") or "3")
local low = tonumber(os.getenv("LAB_LINE_MIN") or "3")
local high = tonumber(os.getenv("LAB_LINE_MAX") or "5")
local due = {}  -- second (os.time()) -> the units decided again from then on
local cursor = nil  -- the earliest second that may still hold units

local function next_due(now)
  while cursor ~= nil and cursor <= now do
    local units = due[cursor]
    if units ~= nil and #units > 0 then
      return table.remove(units)
    end
    due[cursor] = nil
    cursor = cursor + 1
  end
  return nil
end

function request()
  local now = os.time()
  cursor = cursor or now
  local unit = next_due(now)
  if unit == nil then
    unit = "line-" .. common.new_unit()
    for _ = 2, math.random(low, high) do
      local at = now + math.random(1, window)
      local units = due[at]
      if units == nil then
        units = {}
        due[at] = units
      end
      units[#units + 1] = unit
    end
  end
  return wrk.format("POST", "/api/v1/decide", common.headers, '{"unit":"' .. unit .. '"}')
end
