-- The soak's traffic mix: mostly known units, some new ones, OFREP, small and large batches.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

local ofrep_path = "/ofrep/v1/evaluate/flags/" .. common.ofrep_flag

local function batch(size)
  local units = {}
  for i = 1, size do
    if i % 2 == 0 then
      units[i] = '"' .. common.known_unit() .. '"'
    else
      units[i] = '"' .. common.new_unit() .. '"'
    end
  end
  return wrk.format("POST", "/api/v1/decide/batch", common.headers,
    '{"units":[' .. table.concat(units, ",") .. ']}')
end

-- Per 1000 requests: 600 known, 200 new, 180 OFREP, 19 batches of 100, 1 of 1000.
function request()
  local roll = math.random(1, 1000)
  if roll <= 600 then
    return wrk.format("POST", "/api/v1/decide", common.headers,
      '{"unit":"' .. common.known_unit() .. '"}')
  elseif roll <= 800 then
    return wrk.format("POST", "/api/v1/decide", common.headers,
      '{"unit":"' .. common.new_unit() .. '"}')
  elseif roll <= 980 then
    return wrk.format("POST", ofrep_path, common.headers,
      '{"context":{"targetingKey":"' .. common.known_unit() .. '"}}')
  elseif roll <= 999 then
    return batch(100)
  end
  return batch(1000)
end
