-- wr_join.lua: a buyer's place in a sale's waiting room.
--
-- KEYS[1]  fs:{sale:ID}:wr          the room (field seq: tickets issued)
-- KEYS[2]  fs:{sale:ID}:wr:buyers   hash buyer -> ticket number
-- ARGV[1]  buyer id
--
-- Returns the buyer's ticket number: a new one on the first join, the same
-- one on every later join (joining again never buys a better place, and a
-- retried join is harmless).
local n = redis.call('HGET', KEYS[2], ARGV[1])
if n then
  return tonumber(n)
end
n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], ARGV[1], n)
return n
