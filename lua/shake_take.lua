-- shake_take.lua: confirm a batch of would-be winners of one shake campaign
-- against the release clock, atomically.
--
-- KEYS[1]  fs:{shake:ID}:meta
-- KEYS[2]  fs:{shake:ID}:wins    win number -> "user|amount|won_ms|node"
-- KEYS[3]  fs:{shake:ID}:users   user id -> wins
-- KEYS[4]  fs:{shake:ID}:batch:BID this batch's record (BID is random per batch)
-- ARGV[1]  node id
-- ARGV[2]  seconds the batch record lives
-- ARGV[3], ARGV[4]  user id, a random integer in [0, 2^31) for the amount; more pairs may follow
--
-- released(now) = min(total, floor(rate * (now - starts_at_ms) / 1000)) on
-- Redis's clock. A win needs taken < released (so taken <= released <= total
-- always) and, with a cap, fewer than max_wins wins for the user.
--
-- Amounts: "range" draws min + r mod (max - min + 1); "split" is the double
-- mean over what is left: uniform in [1, 2 * left_cents / left_count), the
-- last envelope takes the rest — exact to the cent, every amount >= 1.
--
-- Returns {now_ms, code, released, seq_before, r1, r2, ...}.
-- code: 0 running, -5 no such campaign, -3 not started, -9 the batch was
-- written off (then no r). As in buy.lua, the batch record ("ran:" and the
-- batch's win numbers) lets a node that lost the reply write the batch off
-- before it runs, or undo the wins it made (their shakers were told 503):
-- see shake_undo.lua.
-- r: amount (> 0) won, -1 nothing released right now, -2 the user is at the
-- cap, -4 the campaign is exhausted (taken = total).
-- The win number of the k-th winner of the batch is seq_before + k; seq
-- counts every win ever made (undone ones too), so numbers are never
-- reused. A campaign stored before seq existed starts it at taken.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {now, -9, 0}
end
local m = redis.call('HMGET', KEYS[1], 'total', 'rate', 'starts_at_ms', 'mode', 'min', 'max',
  'max_wins', 'taken', 'left_cents', 'seq')
if not m[1] then
  return {now, -5, 0}
end
local total, rate, starts = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if now < starts then
  return {now, -3, 0}
end
local released = math.min(total, math.floor(rate * (now - starts) / 1000))
local mode, lo, hi, cap = m[4], tonumber(m[5]), tonumber(m[6]), tonumber(m[7])
local taken, leftCents = tonumber(m[8]), tonumber(m[9])
local seq = tonumber(m[10]) or taken
local out = {now, 0, released, seq}
local nums = {}
local wins, paid = {}, 0
local userWins = {}
local users = {}
for i = 3, #ARGV, 2 do
  local u, r = ARGV[i], tonumber(ARGV[i + 1])
  local w = userWins[u]
  if w == nil then
    w = tonumber(redis.call('HGET', KEYS[3], u) or '0')
  end
  if taken >= total then
    out[#out + 1] = -4
  elseif taken >= released then
    out[#out + 1] = -1
  elseif cap > 0 and w >= cap then
    out[#out + 1] = -2
  else
    local a
    if mode == 'range' then
      a = lo + r % (hi - lo + 1)
    else
      local leftCount = total - taken
      if leftCount == 1 then
        a = leftCents
      else
        local mx = math.floor(2 * leftCents / leftCount)
        if mx <= 1 then
          a = 1
        else
          a = 1 + r % (mx - 1)
        end
      end
      leftCents = leftCents - a
    end
    taken = taken + 1
    seq = seq + 1
    paid = paid + a
    w = w + 1
    users[u] = true
    nums[#nums + 1] = seq
    wins[#wins + 1] = seq
    wins[#wins + 1] = u .. '|' .. a .. '|' .. now .. '|' .. ARGV[1]
    out[#out + 1] = a
  end
  userWins[u] = w
end
if #wins > 0 then
  local uargs = {}
  for u in pairs(users) do
    uargs[#uargs + 1] = u
    uargs[#uargs + 1] = userWins[u]
  end
  redis.call('HSET', KEYS[3], unpack(uargs))
  redis.call('HSET', KEYS[2], unpack(wins))
  redis.call('HSET', KEYS[1], 'taken', taken, 'left_cents', leftCents, 'seq', seq)
  redis.call('HINCRBY', KEYS[1], 'paid_cents', paid)
end
redis.call('SET', KEYS[4], 'ran:' .. table.concat(nums, ','), 'EX', ARGV[2])
return out
