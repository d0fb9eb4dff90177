-- buy.lua: settle a batch of buyers of one sale in one atomic step.
--
-- KEYS[1]  fs:{sale:ID}:meta       settings and books (remaining, pending, seq, ...)
-- KEYS[2]  fs:{sale:ID}:users      user id -> "n1,n2,..." the user's active orders
--          (pending + paid); how many there are is the user's count against
--          the limit. One value serves both the limit and GET
--          /v1/users/me/orders, so listing a buyer's orders costs a sale nothing.
-- KEYS[3]  fs:{sale:ID}:orders     order number -> "status|deadline_ms|created_ms|node|user"
-- KEYS[4]  fs:{sale:ID}:deadlines  zset of "first-last" order-number ranges (one per
--          batch that sold) scored by deadline_ms; the sweeper's index
-- KEYS[5]  fs:{sale:ID}:batch:BID   this batch's record (BID is random per batch)
-- KEYS[6]  fs:{sale:ID}:idem       "k|user|key" -> order number (Idempotency-Key),
--          and "c|N" -> 1 once a repeat answered order N (see settle.lua "claim")
-- KEYS[7]  fs:{sale:ID}:idemexp    zset of "N|user|key" by the order's pay deadline:
--          when a key is forgotten
-- KEYS[8]  fs:{sale:ID}:wr:used    hash: waiting-room ticket number -> the order it
--          bought (see waitroom): what makes an admitted ticket single-use
-- ARGV[1]  node id recorded on each order
-- ARGV[2]  seconds the batch record lives
-- ARGV[3]  user ids, one per buyer, in arrival order, joined by ","; a user
--          may repeat (ids never hold a comma). One argument rather than one
--          per buyer: fewer values to box, send and parse on both sides.
-- ARGV[4]  optional: "i:key,i:key,..." the Idempotency-Key of buyer i (1-based)
--          for the buyers that sent one (keys never hold "," or "|").
-- ARGV[5]  optional: "i:n,i:n,..." the waiting-room ticket number of buyer i,
--          for the buyers of a sale with a waiting room (the node checked the
--          ticket's signature, owner, expiry and turn; only "used" needs Redis,
--          so it is checked here, in the same atomic step that sells).
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
-- r: order number (> 0) on success, -1 sold out, -2 the user is at the limit,
-- -6 the buyer's waiting-room ticket already bought an order that stands
-- (pending, paid, cancelled or expired: only an aborted one, whose buyer was
-- told no, frees the ticket again),
-- or "dN:deadline_ms" when the buyer's Idempotency-Key already names order N,
-- still pending or paid: a repeat, which takes no unit and no limit slot
-- (the node then claims it before answering; see settle.lua).
--
-- A key lives as long as its order's pay window: batches that carry keys
-- first forget up to 32 keys whose window has closed, so the idem hash holds
-- at most one entry per order of the window (bounded by the orders hash).
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
-- Idempotency keys of this batch, by buyer index.
local keys = {}
if ARGV[4] and ARGV[4] ~= '' then
  for i, k in string.gmatch(ARGV[4], '(%d+):([^,]+)') do
    keys[tonumber(i)] = k
  end
  local old = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, 32)
  for _, e in ipairs(old) do
    local n, field = string.match(e, '^(%d+)|(.*)$')
    if n then
      if redis.call('HGET', KEYS[6], 'k|' .. field) == n then
        redis.call('HDEL', KEYS[6], 'k|' .. field)
      end
      redis.call('HDEL', KEYS[6], 'c|' .. n)
    end
    redis.call('ZREM', KEYS[7], e)
  end
end
-- Waiting-room tickets of this batch, by buyer index, and the orders the
-- used ones bought (one HMGET for the batch).
local tickets, tused, ticketArgs = {}, {}, {}
if ARGV[5] and ARGV[5] ~= '' then
  local list = {}
  for i, n in string.gmatch(ARGV[5], '(%d+):(%d+)') do
    tickets[tonumber(i)] = n
    list[#list + 1] = n
  end
  local got = redis.call('HMGET', KEYS[8], unpack(list))
  for j, n in ipairs(list) do
    local o = got[j]
    if o then
      local rec = redis.call('HGET', KEYS[3], o)
      if string.sub(rec or 'a', 1, 1) ~= 'a' then
        tused[n] = true
      end
    end
  end
end
-- One HMGET reads every buyer's count (repeats are harmless), instead of a
-- call per buyer: most of a batch's cost in Redis is per call.
local counts = redis.call('HMGET', KEYS[2], unpack(users))
local held, changed = {}, {}
local lists = {} -- user -> active order list, as it will be after this batch
for i, u in ipairs(users) do
  if held[u] == nil then
    local l = counts[i] or ''
    lists[u] = l
    local _, commas = string.gsub(l, ',', '')
    held[u] = (l == '') and 0 or commas + 1
  end
end
local userArgs, orderArgs = {}, {}
local prefix = 'p|' .. deadline .. '|' .. now .. '|' .. ARGV[1] .. '|'
local sold = {}
local seen = {} -- "user|key" -> order number sold earlier in this batch
local idemArgs, expArgs = {}, {}
for i, u in ipairs(users) do
  local h = held[u]
  local k = keys[i]
  local field, prior
  if k then
    field = u .. '|' .. k
    prior = seen[field]
    if prior then
      prior = prior .. ':' .. deadline
    else
      local n = redis.call('HGET', KEYS[6], 'k|' .. field)
      if n then
        local rec = redis.call('HGET', KEYS[3], n)
        local st, dl = string.match(rec or '', '^(%a)|(%d+)|')
        -- Only a live order is the first result; an aborted, expired or
        -- cancelled one answered (or became) "no", so the key buys anew.
        if st == 'p' or st == 'y' then
          prior = n .. ':' .. dl
        end
      end
    end
  end
  local tk = tickets[i]
  if prior then
    res[#res + 1] = 'd' .. prior
  elseif tk and tused[tk] then
    res[#res + 1] = -6
  elseif h >= limit then
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
    if tk then
      tused[tk] = true
      ticketArgs[#ticketArgs + 1] = tk
      ticketArgs[#ticketArgs + 1] = seq
    end
    if field then
      seen[field] = seq
      idemArgs[#idemArgs + 1] = 'k|' .. field
      idemArgs[#idemArgs + 1] = seq
      expArgs[#expArgs + 1] = deadline
      expArgs[#expArgs + 1] = seq .. '|' .. field
    end
    local l = lists[u]
    if l == '' then
      lists[u] = tostring(seq)
    else
      lists[u] = l .. ',' .. seq
    end
  end
  held[u] = h
end
if #orderArgs > 0 then
  for u in pairs(changed) do
    userArgs[#userArgs + 1] = u
    userArgs[#userArgs + 1] = lists[u]
  end
  redis.call('HSET', KEYS[2], unpack(userArgs))
  if #idemArgs > 0 then
    redis.call('HSET', KEYS[6], unpack(idemArgs))
    redis.call('ZADD', KEYS[7], unpack(expArgs))
  end
  redis.call('HSET', KEYS[3], unpack(orderArgs))
  if #ticketArgs > 0 then
    redis.call('HSET', KEYS[8], unpack(ticketArgs))
  end
  -- One index entry for the whole batch: its orders share a deadline and
  -- their numbers are consecutive (seq moves only on a sale). A zset entry
  -- per order was a quarter of this script's cost in Redis.
  redis.call('ZADD', KEYS[4], deadline, sold[1] .. '-' .. seq)
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'seq', seq)
  redis.call('HINCRBY', KEYS[1], 'pending', #sold)
end
redis.call('SET', KEYS[5], 'ran:' .. table.concat(sold, ','), 'EX', ARGV[2])
return {now, deadline, 0, table.concat(res, ',')}
