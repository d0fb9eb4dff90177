-- buy.lua: every request buys for a random user u0..u(N-1) with the GET
-- form of buy, so a crowd of distinct users competes for the stock.
--
--   wrk -t2 -c256 -d10s -s bench/wrk/buy.lua http://127.0.0.1:8080 -- SALE USERS [PREFIX]
--
-- SALE defaults to s1, USERS to 100000, PREFIX to u. At the end it prints
-- the status mix: 201 = a unit won, 409 sold_out / limit_reached.

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "tally.lua")

local path, users, prefix

function init(args)
   local sale = args[1] or "s1"
   users = tonumber(args[2] or "100000")
   prefix = args[3] or "u"
   path = "/v1/sales/" .. sale .. "/buy?user_id=" .. prefix
   -- Seed per thread so threads do not replay one sequence of users.
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
   return wrk.format("GET", path .. math.random(0, users - 1))
end
