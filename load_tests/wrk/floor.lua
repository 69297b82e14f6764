-- The front's floor: a constant answer in front of everything else of Lab (config/bench.py),
-- same body shape as decide.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  return wrk.format("POST", "/bench/floor", common.headers,
    '{"unit":"' .. common.known_unit() .. '"}')
end
