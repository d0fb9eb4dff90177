-- buy.lua: settle a batch of buyers of one sale in one atomic step.
--
-- KEYS[1]  fs:{sale:ID}:meta       settings and books (remaining, pending, seq, ...)
-- KEYS[2]  fs:{sale:ID}:users      user id -> active orders (pending + paid)
-- KEYS[3]  fs:{sale:ID}:orders     order number -> "status|deadline_ms|created_ms|node|user"
-- KEYS[4]  fs:{sale:ID}:deadlines  zset of pending order numbers scored by deadline_ms
-- ARGV[1]  node id recorded on each order
-- ARGV[2..] user ids, one per buyer, in arrival order; a user may repeat
--
-- Returns {now_ms, deadline_ms, sale_code, r1, r2, ...}.
-- sale_code: 0 open, -5 no such sale, -3 not started, -4 ended (then no r).
-- r: order number (> 0) on success, -1 sold out, -2 the user is at the limit.
--
-- The limit is checked before the stock, so a user at the limit never takes a
-- unit; "remaining > 0" (never ">= 0") is what keeps the last unit from being
-- sold twice.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
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
if #ARGV < 2 then
  return {now, 0, 0} -- no buyers: nothing to do (HMGET needs a field)
end
local remaining, limit = tonumber(m[1]), tonumber(m[2])
local deadline = now + tonumber(m[3])
local seq = tonumber(m[6])
local out = {now, deadline, 0}
-- One HMGET reads every buyer's count (repeats are harmless), instead of a
-- call per buyer: most of a batch's cost in Redis is per call.
local counts = redis.call('HMGET', KEYS[2], unpack(ARGV, 2))
local held, changed = {}, {}
for i = 2, #ARGV do
  if held[ARGV[i]] == nil then
    held[ARGV[i]] = tonumber(counts[i - 1] or '0')
  end
end
local userArgs, orderArgs, zArgs = {}, {}, {}
local prefix = 'p|' .. deadline .. '|' .. now .. '|' .. ARGV[1] .. '|'
for i = 2, #ARGV do
  local u = ARGV[i]
  local h = held[u]
  if h >= limit then
    out[#out + 1] = -2
  elseif remaining <= 0 then
    out[#out + 1] = -1
  else
    remaining = remaining - 1
    seq = seq + 1
    h = h + 1
    changed[u] = true
    orderArgs[#orderArgs + 1] = seq
    orderArgs[#orderArgs + 1] = prefix .. u
    zArgs[#zArgs + 1] = deadline
    zArgs[#zArgs + 1] = seq
    out[#out + 1] = seq
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
  redis.call('ZADD', KEYS[4], unpack(zArgs))
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'seq', seq)
  redis.call('HINCRBY', KEYS[1], 'pending', #zArgs / 2)
end
return out
