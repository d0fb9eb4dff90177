-- shake_undo.lua: undo wins of one shake campaign whose shakers were told
-- 503 (their batch's reply was lost), handing each envelope back to the
-- campaign so a later shaker can win it.
--
-- KEYS[1]  fs:{shake:ID}:meta
-- KEYS[2]  fs:{shake:ID}:wins    win number -> "user|amount|won_ms|node"
-- KEYS[3]  fs:{shake:ID}:users   user id -> wins
-- ARGV[1..] win numbers to undo
--
-- Each undo takes the win back from taken and paid_cents (and, in split
-- mode, gives its cents back to left_cents, so the double mean stays exact
-- to the cent) and counts it in undone; its number is not reused (seq).
-- Returns one code per win: 1 undone, -5 no such win (undone before).
local mode = redis.call('HGET', KEYS[1], 'mode')
local out = {}
for i = 1, #ARGV do
  local rec = redis.call('HGET', KEYS[2], ARGV[i])
  if not rec then
    out[#out + 1] = -5
  else
    local u, a = string.match(rec, '^(.*)|(%d+)|%d+|[^|]*$')
    a = tonumber(a)
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HINCRBY', KEYS[3], u, -1)
    redis.call('HINCRBY', KEYS[1], 'taken', -1)
    redis.call('HINCRBY', KEYS[1], 'paid_cents', -a)
    if mode == 'split' then
      redis.call('HINCRBY', KEYS[1], 'left_cents', a)
    end
    redis.call('HINCRBY', KEYS[1], 'undone', 1)
    out[#out + 1] = 1
  end
end
return out
