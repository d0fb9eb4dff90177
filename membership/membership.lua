-- membership.lua: one heartbeat of one node, and the live view it returns.
--
-- The set of live nodes is one sorted set: member = node id, score = the
-- node's last beat in milliseconds of Redis's own clock (TIME), so the clocks
-- of the nodes never matter. Every beat also prunes members whose last beat is
-- older than the TTL, so a node that died without deregistering drops out
-- within TTL + one beat of any survivor.
--
-- KEYS[1]  the members sorted set (fs:nodes)
-- ARGV[1]  this node's id; "" to only prune and read
-- ARGV[2]  TTL in milliseconds
--
-- Returns the ids of the live nodes (in score order; the Go side sorts them by
-- id). The key itself expires TTL after the last beat of the last node, so a
-- stopped cluster leaves nothing behind.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
