-- buy.lua: settle a batch of buyers of one sale in one atomic step.
--
-- KEYS[1]  fs:{sale:ID}:meta       settings and books (remaining, pending, seq, ...)
-- KEYS[2]  fs:{sale:ID}:users      user id -> active orders (pending + paid)
-- KEYS[3]  fs:{sale:ID}:orders     order number -> "status|deadline_ms|created_ms|node|user"
-- KEYS[4]  fs:{sale:ID}:deadlines  zset of "first-last" order-number ranges (one per
--          batch that sold) scored by deadline_ms; the sweeper's index
-- KEYS[5]  fs:{sale:ID}:batch:BID   this batch's record (BID is random per batch)
-- ARGV[1]  node id recorded on each order
-- ARGV[2]  seconds the batch record lives
-- ARGV[3]  user ids, one per buyer, in arrival order, joined by ","; a user
--          may repeat (ids never hold a comma). One argument rather than one
--          per buyer: fewer values to box, send and parse on both sides.
--
-- Returns {now_ms, deadline_ms, sale_code, results} where results is
-- "r1,r2,..." (one string, for the same reason).
-- sale_code: 0 open, -5 no such sale, -3 not started, -4 ended, -9 the batch
-- was written off (then no r).
--
-- The batch record makes a lost reply resolvable: the node that did not hear
-- back either finds the record (the batch ran: it undoes the orders listed)
-- or writes it first as a tombstone, so this script, if it arrives late,
-- does nothing.
-- r: order number (> 0) on success, -1 sold out, -2 the user is at the limit.
--
-- The limit is checked before the stock, so a user at the limit never takes a
-- unit; "remaining > 0" (never ">= 0") is what keeps the last unit from being
-- sold twice.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {now, 0, -9}
end
local m = redis.call('HMGET', KEYS[1], 'remaining', 'per_user_limit', 'pay_timeout_ms',
  'starts_at_ms', 'ends_at_ms', 'seq')
if not m[1] then
  return {now, 0, -5}
end
local starts, ends = tonumber(m[4]), tonumber(m[5])
if starts > 0 and now < starts then
  return {now, 0, -3}
end
if ends > 0 and now >= ends then
  return {now, 0, -4}
end
local users = {}
for u in string.gmatch(ARGV[3] or '', '[^,]+') do
  users[#users + 1] = u
end
if #users == 0 then
  return {now, 0, 0, ''} -- no buyers: nothing to do (HMGET needs a field)
end
local remaining, limit = tonumber(m[1]), tonumber(m[2])
local deadline = now + tonumber(m[3])
local seq = tonumber(m[6])
local res = {}
-- One HMGET reads every buyer's count (repeats are harmless), instead of a
-- call per buyer: most of a batch's cost in Redis is per call.
local counts = redis.call('HMGET', KEYS[2], unpack(users))
local held, changed = {}, {}
for i, u in ipairs(users) do
  if held[u] == nil then
    held[u] = tonumber(counts[i] or '0')
  end
end
local userArgs, orderArgs = {}, {}
local prefix = 'p|' .. deadline .. '|' .. now .. '|' .. ARGV[1] .. '|'
local sold = {}
for _, u in ipairs(users) do
  local h = held[u]
  if h >= limit then
    res[#res + 1] = -2
  elseif remaining <= 0 then
    res[#res + 1] = -1
  else
    remaining = remaining - 1
    seq = seq + 1
    h = h + 1
    changed[u] = true
    orderArgs[#orderArgs + 1] = seq
    orderArgs[#orderArgs + 1] = prefix .. u
    sold[#sold + 1] = seq
    res[#res + 1] = seq
  end
  held[u] = h
end
if #orderArgs > 0 then
  for u in pairs(changed) do
    userArgs[#userArgs + 1] = u
    userArgs[#userArgs + 1] = held[u]
  end
  redis.call('HSET', KEYS[2], unpack(userArgs))
  redis.call('HSET', KEYS[3], unpack(orderArgs))
  -- One index entry for the whole batch: its orders share a deadline and
  -- their numbers are consecutive (seq moves only on a sale). A zset entry
  -- per order was a quarter of this script's cost in Redis.
  redis.call('ZADD', KEYS[4], deadline, sold[1] .. '-' .. seq)
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'seq', seq)
  redis.call('HINCRBY', KEYS[1], 'pending', #sold)
end
redis.call('SET', KEYS[5], 'ran:' .. table.concat(sold, ','), 'EX', ARGV[2])
return {now, deadline, 0, table.concat(res, ',')}
