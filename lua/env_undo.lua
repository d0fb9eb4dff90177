-- env_undo.lua: undo opens whose envelope.opened event could not be made
-- durable, putting each share back at the head of the list.
--
-- KEYS[1]  fs:{env:ID}:meta
-- KEYS[2]  fs:{env:ID}:shares
-- KEYS[3]  fs:{env:ID}:opened
-- ARGV[1..] user ids whose open is undone
--
-- Returns one code per user: 1 undone, 0 kept (the envelope was refunded in
-- the meantime, so its rest is already with the sender and the open stands),
-- -5 no such open.
local st = redis.call('HGET', KEYS[1], 'state')
local out = {}
for i = 1, #ARGV do
  local u = ARGV[i]
  local rec = redis.call('HGET', KEYS[3], u)
  if not rec then
    out[#out + 1] = -5
  elseif st ~= 'open' then
    out[#out + 1] = 0
  else
    local a = tonumber(string.match(rec, '^(%d+)|'))
    redis.call('HDEL', KEYS[3], u)
    redis.call('LPUSH', KEYS[2], a)
    redis.call('HINCRBY', KEYS[1], 'left', 1)
    redis.call('HINCRBY', KEYS[1], 'left_cents', a)
    redis.call('HINCRBY', KEYS[1], 'opened', -1)
    redis.call('HINCRBY', KEYS[1], 'opened_cents', -a)
    redis.call('HINCRBY', KEYS[1], 'undone', 1)
    out[#out + 1] = 1
  end
end
return out
