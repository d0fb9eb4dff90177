-- tally.lua: shared by the flashsale wrk scripts (loaded with dofile).
-- Each wrk thread counts replies by HTTP status, by flashsale error code
-- (or "ok"/"won"/"no_win" for 2xx) and by X-Flashsale-Node; done() sums the
-- threads' tables (fetched with thread:get, which copies tables) and prints
-- the mix, and the sum of a per-thread global `cents` when a script keeps one. Defining response() makes wrk hand every body to Lua, which costs
-- some of wrk's speed: use plain wrk (no script) for the ceiling numbers.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

statuses, codes, nodes = {}, {}, {}

local function inc(t, k)
   t[k] = (t[k] or 0) + 1
end

-- classify returns the outcome name of one reply; scripts may override
-- classify_ok for their 2xx bodies.
function classify(status, body)
   if status >= 200 and status < 300 then
      if classify_ok then
         return classify_ok(body)
      end
      return "ok"
   end
   local code = body and string.match(body, '"code"%s*:%s*"([%w_]+)"')
   return code or "other"
end

function response(status, headers, body)
   inc(statuses, status)
   inc(codes, classify(status, body))
   local node = headers["X-Flashsale-Node"] or headers["x-flashsale-node"]
   if node then
      inc(nodes, node)
   end
end

local function sum(name)
   local total = {}
   for _, thread in ipairs(threads) do
      local t = thread:get(name)
      if t then
         for k, v in pairs(t) do
            total[k] = (total[k] or 0) + v
         end
      end
   end
   return total
end

local function line(label, t)
   local keys = {}
   for k in pairs(t) do
      table.insert(keys, k)
   end
   table.sort(keys, function(a, b) return t[a] > t[b] end)
   local parts = {}
   for _, k in ipairs(keys) do
      table.insert(parts, tostring(k) .. "=" .. t[k])
   end
   io.write(string.format("%-8s %s\n", label, table.concat(parts, "  ")))
end

function done(summary, latency, requests)
   io.write("-- flashsale status mix --\n")
   line("status", sum("statuses"))
   line("codes", sum("codes"))
   line("nodes", sum("nodes"))
   local cents, any = 0, false
   for _, thread in ipairs(threads) do
      local c = thread:get("cents")
      if type(c) == "number" then
         cents, any = cents + c, true
      end
   end
   if any then
      io.write(string.format("won      %d cents\n", cents))
   end
   io.write(string.format("latency  p50 %.2fms  p99 %.2fms  max %.2fms\n",
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
