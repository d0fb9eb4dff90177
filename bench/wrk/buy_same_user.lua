-- buy_same_user.lua: every request buys as one fixed user: the per-user
-- limit test. Expect exactly LIMIT 201s in the whole run (across all
-- threads and connections) and 409 limit_reached (or sold_out) for the rest.
--
--   wrk -t2 -c64 -d5s -s bench/wrk/buy_same_user.lua http://127.0.0.1:8080 -- SALE "$(flashsale token --user u1)"
--
-- SALE defaults to s1; the second argument is the user's bearer token.
-- (The node's per-user rate limit answers most of them 429 rate_limited
-- unless FLASHSALE_RATE_PER_USER=0.)

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "tally.lua")

local req

function init(args)
   local sale = args[1] or "s1"
   if not args[2] then
      error("give the user's bearer token: -- SALE TOKEN")
   end
   -- Built once: the same bytes every time.
   req = wrk.format("GET", "/v1/sales/" .. sale .. "/buy", {Authorization = "Bearer " .. args[2]})
end

function request()
   return req
end
