-- pay.lua: record the payment provider's confirmation of one order (the
-- signed POST /v1/payments/callback). The only way an order becomes paid.
--
-- KEYS[1]  fs:{sale:ID}:meta      settings (price_cents) and books
-- KEYS[2]  fs:{sale:ID}:orders    order number -> "status|deadline_ms|created_ms|node|user"
-- KEYS[3]  fs:{sale:ID}:payments  order number -> payment id that paid it
-- KEYS[4]  fs:{sale:ID}:outbox    the paid transition, written in the same
--          atomic step as "<n>:y" -> "<now_ms>|<payment id>|<record>" so its
--          order.paid event is never stranded (see settle.lua)
-- ARGV[1]  order number
-- ARGV[2]  payment id
-- ARGV[3]  amount in cents
--
-- Returns {now_ms, code, record}:
--    1  paid now (pending -> paid; pending -1, paid +1)
--    0  this payment id paid it before: the same answer again (a retried callback)
--   -5  no such order
--   -6  the order expired (or its deadline passed: the expiry consumer releases
--       the unit, as for any unpaid order)
--   -7  the order was cancelled or undone: nothing to pay
--  -10  already paid by another payment id: a double charge to refund
--  -11  the amount is not the sale's price
-- Nothing changes unless the code is 1.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then
  return {now, -5, ''}
end
if tonumber(redis.call('HGET', KEYS[1], 'price_cents') or '-1') ~= tonumber(ARGV[3]) then
  return {now, -11, rec}
end
local prior = redis.call('HGET', KEYS[3], ARGV[1])
if prior then
  if prior == ARGV[2] then
    return {now, 0, rec}
  end
  return {now, -10, rec}
end
local status, deadline, rest = string.match(rec, '^(%a)|(%d+)|(.*)$')
if status == 'p' then
  if now >= tonumber(deadline) then
    return {now, -6, rec}
  end
  rec = 'y|' .. deadline .. '|' .. rest
  redis.call('HSET', KEYS[2], ARGV[1], rec)
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[1] .. ':y', now .. '|' .. ARGV[2] .. '|' .. rec)
  redis.call('HINCRBY', KEYS[1], 'pending', -1)
  redis.call('HINCRBY', KEYS[1], 'paid', 1)
  return {now, 1, rec}
elseif status == 'x' then
  return {now, -6, rec}
elseif status == 'y' then
  return {now, -10, rec}
end
return {now, -7, rec}
