-- decide/batch with LAB_BATCH_SIZE (default 1000) units never seen before per call.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  local units = {}
  for i = 1, common.batch_size do
    units[i] = '"' .. common.new_unit() .. '"'
  end
  return wrk.format("POST", "/api/v1/decide/batch", common.headers,
    '{"units":[' .. table.concat(units, ",") .. ']}')
end
