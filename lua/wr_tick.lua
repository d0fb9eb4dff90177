-- wr_tick.lua: one step of a sale's waiting room, run by every node every
-- tick; only the node holding the lease advances it.
--
-- KEYS[1]  fs:{sale:ID}:meta   the sale (remaining, wr_admit_per_sec, starts_at_ms)
-- KEYS[2]  fs:{sale:ID}:wr     the room: seq (tickets issued), serving (the
--                               "now serving" number), pre (tickets issued
--                               before the opening; -1/absent until then),
--                               seed (the opening's shuffle), last_ms, lease, lease_until
-- ARGV[1]  this node's id
-- ARGV[2]  lease length in ms
-- ARGV[3]  a random seed, used only if this call performs the opening
--
-- The lease holder (or whoever finds the lease lapsed) takes the lease,
-- performs the opening once (pre = seq, seed = ARGV[3]) when Redis's clock
-- passes starts_at, and advances serving by admit_per_sec x elapsed time,
-- never past seq. No credit builds up while the sale is sold out or nobody
-- waits, so admission resumes at the set rate when units come back.
--
-- Returns {remaining, seq, serving, pre, seed, now_ms}; {-1} when the sale
-- does not exist.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local m = redis.call('HMGET', KEYS[1], 'remaining', 'wr_admit_per_sec', 'starts_at_ms')
if not m[1] then
  return {-1}
end
local remaining = tonumber(m[1])
local rate = tonumber(m[2]) or 0
local starts = tonumber(m[3]) or 0
local w = redis.call('HMGET', KEYS[2], 'seq', 'serving', 'pre', 'seed', 'last_ms', 'lease', 'lease_until')
local seq = tonumber(w[1]) or 0
local serving = tonumber(w[2]) or 0
local pre = tonumber(w[3]) or -1
local seed = w[4] or '0'
local last = tonumber(w[5]) or now
local until_ms = tonumber(w[7]) or 0
if rate > 0 and (w[6] == ARGV[1] or until_ms <= now) then
  redis.call('HSET', KEYS[2], 'lease', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
  if pre < 0 and now >= starts then
    pre, seed, last = seq, ARGV[3], now
    redis.call('HSET', KEYS[2], 'pre', pre, 'seed', seed)
  end
  if pre >= 0 then
    if remaining <= 0 or serving >= seq then
      last = now
    else
      if now - last > 1000 then
        last = now - 1000
      end
      local step = math.floor((now - last) * rate / 1000)
      if step > 0 then
        serving = math.min(serving + step, seq)
        last = last + math.floor(step * 1000 / rate)
      end
    end
    redis.call('HSET', KEYS[2], 'serving', serving, 'last_ms', last)
  end
end
return {remaining, seq, serving, pre, seed, now}
