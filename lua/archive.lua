-- archive.lua: drop a finished sale's per-order state from Redis once the
-- order store holds every one of its orders (the caller checked that).
--
-- KEYS[1]  fs:{sale:ID}:meta       kept: settings, counters, and the tombstone
-- KEYS[2]  fs:{sale:ID}:users      dropped
-- KEYS[3]  fs:{sale:ID}:orders     dropped
-- KEYS[4]  fs:{sale:ID}:deadlines  dropped
-- KEYS[5]  fs:{sale:ID}:outbox     must be empty (every transition on Kafka)
-- KEYS[6..] dropped too: the Idempotency-Key maps (idem, idemexp: every key
--          names a final order now), the payment ids (payments: the store's
--          rows carry them) and the waiting room's per-buyer state
--          (wr:buyers, wr:used) — everything that grows with the buyers
-- ARGV[1]  the order sequence number the caller checked against the store
-- ARGV[2]  now_ms, recorded as archived_at_ms
--
-- Returns 1 when archived (or already archived), 0 when the sale moved since
-- the caller looked (an order is pending again, a new one was sold, or a
-- transition still waits in the outbox, or an Idempotency-Key's order is
-- still inside its pay window): nothing is dropped then.
--
-- The counters stay, so the sale still answers GET /v1/sales/{id} and can
-- never sell again: it is archived only when ended or with remaining 0 and
-- nothing pending, so buy.lua answers "ended" or "sold out". Batch records
-- expire on their own (lua.BatchTTL).
if redis.call('HEXISTS', KEYS[1], 'archived_at_ms') == 1 then
  return 1
end
local m = redis.call('HMGET', KEYS[1], 'pending', 'seq')
if not m[1] or m[1] ~= '0' or m[2] ~= ARGV[1] then
  return 0
end
if redis.call('HLEN', KEYS[5]) > 0 then
  return 0
end
-- An Idempotency-Key names its (paid) order until the order's pay deadline
-- (KEYS[7], idemexp, scored by it): a retry until then must still get the
-- order back, so the keys are not dropped before the last deadline.
local last = redis.call('ZRANGE', KEYS[7], -1, -1, 'WITHSCORES')
if last[2] then
  local t = redis.call('TIME')
  if tonumber(last[2]) > t[1] * 1000 + math.floor(t[2] / 1000) then
    return 0
  end
end
redis.call('UNLINK', unpack(KEYS, 2))
redis.call('HSET', KEYS[1], 'archived_at_ms', ARGV[2])
redis.call('HDEL', KEYS[1], 'finish_seen_ms', 'finish_books')
return 1
