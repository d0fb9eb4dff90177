-- env_open.lua: open one envelope for a batch of users in one atomic step.
--
-- KEYS[1]  fs:{env:ID}:meta
-- KEYS[2]  fs:{env:ID}:shares   unopened shares; each open takes the head
-- KEYS[3]  fs:{env:ID}:opened   user id -> "amount|opened_ms|node|seq"
-- KEYS[4]  fs:{env:ID}:batch:BID this batch's record (BID is random per batch)
-- ARGV[1]  node id recorded on each open
-- ARGV[2]  seconds the batch record lives
-- ARGV[3..] user ids, in arrival order; a user may repeat
--
-- Returns {now_ms, env_code, seq_before, r1, r2, ...}: the k-th success of
-- the batch is open number seq_before + k of the envelope (numbers of undone
-- opens are not reused).
-- env_code: 0 open, -5 no such envelope, -6 expired or refunded, -9 the batch
-- was written off (then no r). As in buy.lua, the batch record lets a node
-- that lost the reply write the batch off before it runs, or undo the opens
-- it made (their openers were told 503).
-- r: the amount in cents (> 0) on success, -1 empty, -2 already opened.
--
-- "Already opened" is checked before "empty", so a user who opened gets that
-- answer even from an empty envelope; "left > 0" (never ">= 0") keeps the
-- last share from going twice.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {now, -9}
end
local m = redis.call('HMGET', KEYS[1], 'state', 'expires_at_ms', 'left', 'seq')
if not m[1] then
  return {now, -5}
end
if m[1] ~= 'open' or now >= tonumber(m[2]) then
  return {now, -6}
end
local left, seq = tonumber(m[3]), tonumber(m[4])
local out = {now, 0, seq}
local opened = 0
local seen, rec = {}, {}
local taken = 0
local who = {}
for i = 3, #ARGV do
  local u = ARGV[i]
  if seen[u] or redis.call('HEXISTS', KEYS[3], u) == 1 then
    out[#out + 1] = -2
  elseif left <= 0 then
    out[#out + 1] = -1
  else
    local a = tonumber(redis.call('LPOP', KEYS[2]))
    left = left - 1
    seq = seq + 1
    taken = taken + a
    opened = opened + 1
    rec[#rec + 1] = u
    rec[#rec + 1] = a .. '|' .. now .. '|' .. ARGV[1] .. '|' .. seq
    who[#who + 1] = u
    out[#out + 1] = a
  end
  seen[u] = true
end
if #rec > 0 then
  redis.call('HSET', KEYS[3], unpack(rec))
  redis.call('HSET', KEYS[1], 'left', left, 'seq', seq)
  redis.call('HINCRBY', KEYS[1], 'opened', opened)
  redis.call('HINCRBY', KEYS[1], 'left_cents', -taken)
  redis.call('HINCRBY', KEYS[1], 'opened_cents', taken)
end
redis.call('SET', KEYS[4], 'ran:' .. table.concat(who, ','), 'EX', ARGV[2])
return out
