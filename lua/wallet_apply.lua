-- wallet_apply.lua: apply ledger entries to one user's wallet, each at most
-- once, keyed by an entry id that names what it pays for
-- ("send:env:ID", "open:env:ID", "refund:env:ID", "win:shake:ID.N").
--
-- KEYS[1]  fs:{wallet:USER}:meta     hash: balance (cents), entries
-- KEYS[2]  fs:{wallet:USER}:entries  hash: entry id -> "amount|applied_ms"
-- KEYS[3]  fs:{wallet:USER}:recent   list of entry ids, newest first, capped
-- ARGV[1]  how many entry ids "recent" keeps
-- ARGV[2], ARGV[3]  entry id, signed amount in cents; more pairs may follow
--
-- Returns {balance, a1, a2, ...}: a is 1 when the entry was applied now and
-- 0 when it had been applied before (HSETNX), so repeats change nothing.
-- Credits (opens, wins, refunds, admin credits) come here. The one debit,
-- "send:env:ID", is applied by env_create.lua together with the envelope,
-- after checking the balance; here it only comes again as a repair, where
-- HSETNX finds it and changes nothing. So no balance goes below zero.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {0}
local applied = 0
for i = 2, #ARGV, 2 do
  local amount = tonumber(ARGV[i + 1])
  if redis.call('HSETNX', KEYS[2], ARGV[i], amount .. '|' .. now) == 1 then
    redis.call('HINCRBY', KEYS[1], 'balance', amount)
    redis.call('LPUSH', KEYS[3], ARGV[i])
    applied = applied + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if applied > 0 then
  redis.call('HINCRBY', KEYS[1], 'entries', applied)
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[1]) - 1)
end
out[1] = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
return out
