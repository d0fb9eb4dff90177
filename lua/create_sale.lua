-- create_sale.lua: create a sale unless one with the same id exists.
--
-- KEYS[1]  fs:{sale:ID}:meta   hash with the sale's settings and books
-- ARGV     field, value, field, value, ... (settings; "stock" must be among them)
--
-- Returns 1 when created, 0 when the sale already exists (never a reset of a
-- live sale). The books start at remaining = stock and every counter 0.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
local stock = redis.call('HGET', KEYS[1], 'stock')
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'remaining', stock, 'pending', 0, 'paid', 0, 'expired', 0,
  'cancelled', 0, 'aborted', 0, 'seq', 0, 'created_at_ms', t[1] * 1000 + math.floor(t[2] / 1000))
return 1
