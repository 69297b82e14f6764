-- The peer: Unleash's per-user evaluation, GET /api/frontend?userId=<random per request>,
-- the counterpart of decide_known.lua (a random unit per request, every flag evaluated).
--
-- Environment: UNLEASH_FRONTEND_TOKEN (a frontend token), UNLEASH_USERS (how many distinct
-- user ids to draw from; default the same 3,334 as the seeded Lab units).
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
done = common.done

local headers = { ["Authorization"] = os.getenv("UNLEASH_FRONTEND_TOKEN") or "missing-token" }
local users = tonumber(os.getenv("UNLEASH_USERS") or os.getenv("LAB_KNOWN_UNITS") or "3334")

function request()
  return wrk.format("GET", "/api/frontend?userId=user-" .. math.random(0, users - 1), headers)
end
