-- settle.lua: move orders of one sale out of "pending": pay, cancel, expire
-- or abort. Every path that ends a pending order runs here, so pay racing
-- expiry has exactly one winner and a unit is given back at most once.
--
-- KEYS[1]  fs:{sale:ID}:meta
-- KEYS[2]  fs:{sale:ID}:users
-- KEYS[3]  fs:{sale:ID}:orders
-- KEYS[4]  fs:{sale:ID}:outbox  transitions not yet on Kafka: field
--          "<n>:<status>" -> "<now_ms>|<record>". Written here, in the same
--          atomic step as the transition, so a transition whose order.* event
--          is then lost (publish failed, node killed) is still known and is
--          re-published by the sweeper; the publisher deletes the field once
--          Kafka acknowledged the event.
-- The deadline index (fs:{sale:ID}:deadlines) is not touched here: it holds
-- one range per buy batch, which the sweeper drops once the range's deadline
-- has passed and none of its orders is still pending.
--
-- ARGV[1]  action: "pay", "cancel", "expire" or "abort"
-- ARGV[2..] order numbers
--
-- Returns {now_ms, code1, record1, code2, record2, ...} where record is the
-- order's stored record after the call ("" if unknown) and code is:
--    1  done now (pending -> paid/cancelled/expired/aborted; or expired ->
--       aborted, see below)
--    0  nothing to do: already in the state asked for (idempotent repeat)
--   -5  no such order
--   -6  the order expired (pay or cancel after the deadline; the unit is
--       released here if it was still pending)
--   -7  conflict: the order is in another final state (e.g. cancel a paid one)
--   -8  not due: "expire" before the deadline (the record says when)
--
-- Records: "status|deadline_ms|created_ms|node|user" with status
-- p pending, y paid, c cancelled, x expired, a aborted.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local action = ARGV[1]
local final = ({pay = 'y', cancel = 'c', expire = 'x', abort = 'a'})[action]
if not final then
  return redis.error_reply('settle: unknown action ' .. tostring(action))
end
local counter = {y = 'paid', c = 'cancelled', x = 'expired', a = 'aborted'}
local out = {now}
for i = 2, #ARGV do
  local n = ARGV[i]
  local rec = redis.call('HGET', KEYS[3], n)
  local code
  if not rec then
    code, rec = -5, ''
  else
    local status, deadline, rest = string.match(rec, '^(%a)|(%d+)|(.*)$')
    deadline = tonumber(deadline)
    if status == 'p' then
      local to = final
      if action == 'expire' and now < deadline then
        to = nil
        code = -8
      elseif (action == 'pay' or action == 'cancel') and now >= deadline then
        to = 'x' -- too late: the pay window closed, so the order expires here
        code = -6
      else
        code = 1
      end
      if to then
        rec = to .. '|' .. deadline .. '|' .. rest
        redis.call('HSET', KEYS[3], n, rec)
        redis.call('HSET', KEYS[4], n .. ':' .. to, now .. '|' .. rec)
        redis.call('HINCRBY', KEYS[1], 'pending', -1)
        redis.call('HINCRBY', KEYS[1], counter[to], 1)
        if to ~= 'y' then
          -- The unit goes back to stock and the user's limit slot is freed.
          redis.call('HINCRBY', KEYS[1], 'remaining', 1)
          local user = string.match(rest, '^%d+|[^|]*|(.*)$')
          if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
            redis.call('HDEL', KEYS[2], user)
          end
        end
      end
    elseif status == final then
      code = 0
    elseif status == 'x' and action == 'abort' then
      -- Abort means "nobody was told of this order". An order whose reply was
      -- lost can be expired by the sweeper before its node resolves it: its
      -- unit is already back, so only the label and the counters move.
      rec = 'a' .. string.sub(rec, 2)
      redis.call('HSET', KEYS[3], n, rec)
      redis.call('HSET', KEYS[4], n .. ':a', now .. '|' .. rec)
      redis.call('HINCRBY', KEYS[1], 'expired', -1)
      redis.call('HINCRBY', KEYS[1], 'aborted', 1)
      code = 1
    elseif status == 'x' then
      code = -6
    else
      code = -7
    end
  end
  out[#out + 1] = code
  out[#out + 1] = rec
end
return out
