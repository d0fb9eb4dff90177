-- shake_create.lua: create a shake campaign unless one with the same id exists.
--
-- KEYS[1]  fs:{shake:ID}:meta
-- ARGV[1]  total envelopes
-- ARGV[2]  release rate, envelopes per second
-- ARGV[3]  start, unix ms; 0 = now (Redis clock)
-- ARGV[4]  mode: "split" (a budget split exactly) or "range" (each uniform in [min, max])
-- ARGV[5]  budget in cents (split)
-- ARGV[6]  min cents (range)
-- ARGV[7]  max cents (range)
-- ARGV[8]  most wins per user; 0 = no cap
--
-- Returns {created, now_ms, starts_at_ms}; created 0 means the id is taken.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, now, 0}
end
local starts = tonumber(ARGV[3])
if starts <= 0 then
  starts = now
end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'rate', ARGV[2], 'starts_at_ms', starts, 'mode', ARGV[4],
  'budget', ARGV[5], 'min', ARGV[6], 'max', ARGV[7], 'max_wins', ARGV[8], 'taken', 0, 'paid_cents', 0,
  'left_cents', ARGV[5], 'created_ms', now)
return {1, now, starts}
