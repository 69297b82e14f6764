-- Decide for a unit never seen before: the write path (a unit and 3 assignments stored).
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

function request()
  return wrk.format("POST", "/api/v1/decide", common.headers,
    '{"unit":"' .. common.new_unit() .. '"}')
end
