-- The front's floor with one database round trip (config/bench.py): the floor's constant,
-- answered after one prepared statement on decide's hot-path cursor.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  return wrk.format("POST", "/bench/floor-read", common.headers,
    '{"unit":"' .. common.known_unit() .. '"}')
end
