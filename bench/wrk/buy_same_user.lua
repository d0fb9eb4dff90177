-- buy_same_user.lua: every request buys for one fixed user: the per-user
-- limit test. Expect exactly LIMIT 201s in the whole run (across all
-- threads and connections) and 409 limit_reached (or sold_out) for the rest.
--
--   wrk -t2 -c64 -d5s -s bench/wrk/buy_same_user.lua http://127.0.0.1:8080 -- SALE [USER]
--
-- SALE defaults to s1, USER to u1.

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "tally.lua")

local req

function init(args)
   local sale = args[1] or "s1"
   local user = args[2] or "u1"
   -- Built once: the same bytes every time.
   req = wrk.format("GET", "/v1/sales/" .. sale .. "/buy?user_id=" .. user)
end

function request()
   return req
end
