-- buy.lua: every request buys as a random user of a token pool with the
-- GET form of buy, so a crowd of distinct users competes for the stock.
-- The person is the bearer token's subject (issue 11); the pool file holds
-- one token a line, written by `flashsale token --pool N --out FILE`.
--
--   flashsale token --dir run --pool 10000 --out tokens.txt
--   wrk -t2 -c256 -d10s -s bench/wrk/buy.lua http://127.0.0.1:8080 -- SALE tokens.txt
--
-- SALE defaults to s1, the pool to tokens.txt. At the end it prints the
-- status mix: 201 = a unit won, 409 sold_out / limit_reached.

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or ""
dofile(dir .. "tally.lua")
dofile(dir .. "tokens.lua")

local reqs

function init(args)
   local sale = args[1] or "s1"
   -- Every request is built once here: request() only picks one.
   reqs = build_requests(args[2] or "tokens.txt", "GET", "/v1/sales/" .. sale .. "/buy")
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
   return reqs[math.random(1, #reqs)]
end
