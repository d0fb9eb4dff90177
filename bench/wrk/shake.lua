-- shake.lua: red-envelope shake by random users of a token pool (one bearer
-- token a line, `flashsale token --pool N --out FILE`).
--
--   wrk -t2 -c256 -d10s -s bench/wrk/shake.lua http://127.0.0.1:8080 -- CAMPAIGN tokens.txt
--
-- CAMPAIGN defaults to c1, the pool to tokens.txt. A 200 is counted as "won"
-- or "no_win" from its body; the cents won are summed and printed at the end.

-- tally.lua sits next to this script; wrk gives no search path, so find it
-- from this file's own path.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or ""
dofile(dir .. "tally.lua")
dofile(dir .. "tokens.lua")

local reqs
cents = 0

function init(args)
   local campaign = args[1] or "c1"
   reqs = build_requests(args[2] or "tokens.txt", "POST", "/v1/shakes/" .. campaign .. "/shake", "")
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
   return reqs[math.random(1, #reqs)]
end

function classify_ok(body)
   if body and string.find(body, '"won"%s*:%s*true') then
      local c = tonumber(string.match(body, '"amount_cents"%s*:%s*(%d+)') or "0")
      cents = cents + c
      return "won"
   end
   return "no_win"
end
