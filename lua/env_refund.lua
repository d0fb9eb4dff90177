-- env_refund.lua: close an envelope and hand its unopened rest back to the
-- sender, exactly once.
--
-- KEYS[1]  fs:{env:ID}:meta
-- KEYS[2]  fs:{env:ID}:shares
-- ARGV[1]  "expire" (only at or after the deadline) or "abort" (now: the
--          envelope could not be announced on Kafka)
--
-- Returns {now_ms, code, value}:
--    1, rest          refunded now; rest is the unopened amount in cents
--    0, rest          already refunded before (idempotent repeat), with what it refunded
--   -5, 0             no such envelope
--   -8, expires_at_ms "expire" before the deadline
-- After a refund: opened_cents + refunded_cents = total, left = 0.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local m = redis.call('HMGET', KEYS[1], 'state', 'expires_at_ms', 'left_cents', 'refunded_cents')
if not m[1] then
  return {now, -5, 0}
end
if m[1] == 'refunded' then
  return {now, 0, tonumber(m[4])}
end
if ARGV[1] == 'expire' and now < tonumber(m[2]) then
  return {now, -8, tonumber(m[2])}
elseif ARGV[1] ~= 'expire' and ARGV[1] ~= 'abort' then
  return redis.error_reply('env_refund: unknown mode ' .. tostring(ARGV[1]))
end
local rest = tonumber(m[3])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'refunded', 'left', 0, 'left_cents', 0,
  'refunded_cents', rest, 'refunded_ms', now)
return {now, 1, rest}
