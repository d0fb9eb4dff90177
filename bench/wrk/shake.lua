-- shake.lua: red-envelope shake by random users u0..u(N-1).
--
--   wrk -t2 -c256 -d10s -s bench/wrk/shake.lua http://127.0.0.1:8080 -- CAMPAIGN USERS [PREFIX]
--
-- CAMPAIGN defaults to c1, USERS to 1000000. A 200 is counted as "won" or
-- "no_win" from its body; the cents won are summed and printed at the end.

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "tally.lua")

local path, users, prefix
cents = 0

function init(args)
   local campaign = args[1] or "c1"
   users = tonumber(args[2] or "1000000")
   prefix = args[3] or "u"
   path = "/v1/shakes/" .. campaign .. "/shake"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
   local body = '{"user_id":"' .. prefix .. math.random(0, users - 1) .. '"}'
   return wrk.format("POST", path, nil, body)
end

function classify_ok(body)
   if body and string.find(body, '"won"%s*:%s*true') then
      local c = tonumber(string.match(body, '"amount_cents"%s*:%s*(%d+)') or "0")
      cents = cents + c
      return "won"
   end
   return "no_win"
end
