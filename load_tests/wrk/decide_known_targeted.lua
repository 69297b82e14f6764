-- Decide for an already-assigned unit (a random seeded one), sending its attributes, as a
-- client of targeted experiments does (load_tests/targeting_bench.py).
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  return wrk.format("POST", "/api/v1/decide", common.headers,
    '{"unit":"' .. common.known_unit() .. '","attributes":{"line":"3","fw":"2.4.0"}}')
end
