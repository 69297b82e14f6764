-- The ceiling: the no-op ninja endpoint (config/bench.py), same body shape as decide.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  return wrk.format("POST", "/bench/noop", common.headers,
    '{"unit":"' .. common.known_unit() .. '"}')
end
