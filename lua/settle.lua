-- settle.lua: move orders of one sale out of "pending": pay, cancel, expire
-- or abort. Every path that ends a pending order runs here, so pay racing
-- expiry has exactly one winner and a unit is given back at most once.
--
-- KEYS[1]  fs:{sale:ID}:meta
-- KEYS[2]  fs:{sale:ID}:users    user id -> "n1,n2" active orders (see buy.lua)
-- KEYS[3]  fs:{sale:ID}:orders
-- KEYS[4]  fs:{sale:ID}:idem     (see buy.lua) "c|N": a repeat of order N's
--          Idempotency-Key was answered with it, so N is no longer "nobody
--          was told" and abort leaves it alone
-- KEYS[5]  fs:{sale:ID}:outbox  transitions not yet on Kafka: field
--          "<n>:<status>" -> "<now_ms>|<payment id>|<record>" (the payment
--          id is empty here: pay.lua writes paid entries). Written here, in the same
--          atomic step as the transition, so a transition whose order.* event
--          is then lost (publish failed, node killed) is still known and is
--          re-published by the sweeper; the publisher deletes the field once
--          Kafka acknowledged the event.
-- The deadline index (fs:{sale:ID}:deadlines) is not touched here: it holds
-- one range per buy batch, which the sweeper drops once the range's deadline
-- has passed and none of its orders is still pending.
--
-- ARGV[1]  action: "pay", "cancel", "expire", "abort", "abort_unsent" or
--          "claim" (a node is about to answer a repeated Idempotency-Key with
--          a live order: it marks the order told, so a late abort of its
--          first attempt cannot take it back; a no-op on the books).
--          "abort_unsent" is "abort" of orders whose order.created is known
--          not to be on Kafka (their batch's reply was lost, or their publish
--          failed): one it must keep because it was claimed gets the outbox
--          entry "<n>:p" in the same step, so the creation of an order a
--          buyer was told of is published even if this node dies next.
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
--  -10  "abort" of an order a repeat already answered (claimed): kept
--
-- Records: "status|deadline_ms|created_ms|node|user" with status
-- p pending, y paid, c cancelled, x expired, a aborted.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local action = ARGV[1]
local final = ({pay = 'y', cancel = 'c', expire = 'x', abort = 'a', abort_unsent = 'a', claim = 'claim'})[action]
local aborting = final == 'a'
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
    if action == 'claim' then
      if status == 'y' or (status == 'p' and now < deadline) then
        code = redis.call('HSETNX', KEYS[4], 'c|' .. n, 1) -- 1 claimed now, 0 already
      elseif status == 'x' or status == 'p' then -- p: overdue, expiry is on its way
        code = -6
      else
        code = -7
      end
    elseif status == 'p' and aborting and redis.call('HEXISTS', KEYS[4], 'c|' .. n) == 1 then
      code = -10
      if action == 'abort_unsent' then
        redis.call('HSET', KEYS[5], n .. ':p', now .. '||' .. rec)
      end
    elseif status == 'p' then
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
        redis.call('HSET', KEYS[5], n .. ':' .. to, now .. '||' .. rec)
        redis.call('HINCRBY', KEYS[1], 'pending', -1)
        redis.call('HINCRBY', KEYS[1], counter[to], 1)
        if to ~= 'y' then
          -- The unit goes back to stock and the user's limit slot is freed.
          redis.call('HINCRBY', KEYS[1], 'remaining', 1)
          local user = string.match(rest, '^%d+|[^|]*|(.*)$')
          local kept = {}
          for o in string.gmatch(redis.call('HGET', KEYS[2], user) or '', '[^,]+') do
            if o ~= n then
              kept[#kept + 1] = o
            end
          end
          if #kept > 0 then
            redis.call('HSET', KEYS[2], user, table.concat(kept, ','))
          else
            redis.call('HDEL', KEYS[2], user)
          end
        end
      end
    elseif status == final then
      code = 0
    elseif status == 'x' and aborting then
      -- Abort means "nobody was told of this order". An order whose reply was
      -- lost can be expired by the sweeper before its node resolves it: its
      -- unit is already back, so only the label and the counters move.
      rec = 'a' .. string.sub(rec, 2)
      redis.call('HSET', KEYS[3], n, rec)
      redis.call('HSET', KEYS[5], n .. ':a', now .. '||' .. rec)
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
