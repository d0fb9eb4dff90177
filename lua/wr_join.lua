-- wr_join.lua: a buyer's place in a sale's waiting room.
--
-- KEYS[1]  fs:{sale:ID}:wr          the room (field seq: tickets issued)
-- KEYS[2]  fs:{sale:ID}:wr:buyers   hash buyer -> ticket number
-- KEYS[3]  fs:{sale:ID}:meta        the sale (remaining, ends_at_ms)
-- ARGV[1]  buyer id
--
-- Returns the buyer's ticket number: a new one on the first join, the same
-- one on every later join (joining again never buys a better place, and a
-- retried join is harmless); -1 when the sale has no unit left (the room is
-- closed: nobody queues for stock that is gone; it reopens when units come
-- back), -2 when the sale has ended, -3 when there is no such sale. The
-- sale's state is read here, in the same step that issues the ticket, so a
-- join after the last unit sold is refused at once, not a node tick later.
local m = redis.call('HMGET', KEYS[3], 'remaining', 'ends_at_ms')
if not m[1] then
  return -3
end
local ends = tonumber(m[2]) or 0
if ends > 0 then
  local t = redis.call('TIME')
  if t[1] * 1000 + math.floor(t[2] / 1000) >= ends then
    return -2
  end
end
if tonumber(m[1]) <= 0 then
  return -1
end
local n = redis.call('HGET', KEYS[2], ARGV[1])
if n then
  return tonumber(n)
end
n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], ARGV[1], n)
return n
