-- env_create.lua: create a red envelope with its shares pre-split, unless one
-- with the same id exists.
--
-- KEYS[1]  fs:{env:ID}:meta    hash: settings and books
-- KEYS[2]  fs:{env:ID}:shares  list of the unopened shares (cents), taken from the head
-- KEYS[3]  fs:{wallet:SENDER}:meta     the sender's wallet (see wallet_apply.lua);
-- KEYS[4]  fs:{wallet:SENDER}:entries  the envelope id is chosen so these share
-- KEYS[5]  fs:{wallet:SENDER}:recent   the envelope's Redis Cluster slot
-- ARGV[1]  sender id
-- ARGV[2]  total in cents
-- ARGV[3]  time to live in ms (the refund deadline is Redis now + ttl)
-- ARGV[4]  the debit's ledger entry id ("send:env:ID")
-- ARGV[5]  how many entry ids the wallet's recent list keeps
-- ARGV[6..] the shares in cents, in the order they will be handed out
--
-- Returns {created, now_ms, expires_at_ms, balance}: created is 1, 0 when the
-- id is taken (never a reset of a live envelope), or -1 when the sender's
-- balance does not cover the total (nothing is written). The debit of the
-- sender is part of this one step, so no balance ever goes below zero and
-- every envelope is paid for.
-- Refuses (error reply) shares that do not sum to the total or are < 1 cent:
-- the split is exact by construction in Go, and checked once more here.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, now, 0, 0}
end
local total = tonumber(ARGV[2])
local sum, n = 0, #ARGV - 5
for i = 6, #ARGV do
  local a = tonumber(ARGV[i])
  if not a or a < 1 or a ~= math.floor(a) then
    return redis.error_reply('env_create: share ' .. tostring(ARGV[i]) .. ' is not a whole number of cents >= 1')
  end
  sum = sum + a
end
if n < 1 or sum ~= total then
  return redis.error_reply('env_create: shares sum to ' .. sum .. ', not the total ' .. tostring(total))
end
local balance = tonumber(redis.call('HGET', KEYS[3], 'balance') or '0')
if balance < total or redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 then
  return {-1, now, 0, balance}
end
redis.call('HSET', KEYS[4], ARGV[4], -total .. '|' .. now)
balance = redis.call('HINCRBY', KEYS[3], 'balance', -total)
redis.call('HINCRBY', KEYS[3], 'entries', 1)
redis.call('LPUSH', KEYS[5], ARGV[4])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[5]) - 1)
local expires = now + tonumber(ARGV[3])
-- unpack is bounded by Lua's C stack, so push in chunks.
for i = 6, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HSET', KEYS[1], 'sender', ARGV[1], 'total', total, 'count', n, 'created_ms', now,
  'expires_at_ms', expires, 'left', n, 'left_cents', total, 'seq', 0, 'opened', 0, 'opened_cents', 0,
  'state', 'open', 'refunded_cents', 0, 'refunded_ms', 0, 'undone', 0)
return {1, now, expires, balance}
