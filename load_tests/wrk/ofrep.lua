-- OFREP single-flag evaluation (LAB_OFREP_FLAG) for an already-assigned unit.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

local path = "/ofrep/v1/evaluate/flags/" .. common.ofrep_flag

function request()
  return wrk.format("POST", path, common.headers,
    '{"context":{"targetingKey":"' .. common.known_unit() .. '"}}')
end
