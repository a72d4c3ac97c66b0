-- reclaim.lua: release reservations whose reclaim deadline (Validity-Time + grace) has passed,
-- i.e. sessions that stopped sending CCR-U/T (a crashed gateway, a lost CCR-T).
--
-- KEYS[1] balances HASH, KEYS[2] rsv HASH, KEYS[3] rsvidx ZSET, KEYS[4] stream
-- ARGV[1] now (ms), ARGV[2] at most this many reservations, ARGV[3] payer tag
-- Returns the number of reservations reclaimed.

local function I(n) return string.format('%d', n) end
local members = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(members) do
  local raw = redis.call('HGET', KEYS[2], member)
  local released = {}
  if raw then
    local r = cjson.decode(raw)
    for _, e in ipairs(r.a) do
      local amount = tonumber(e[3])
      redis.call('HINCRBY', KEYS[1], e[1] .. ':r', -amount)
      if not e[4] then redis.call('HINCRBY', KEYS[1], e[1] .. ':a', amount) end
      released[#released + 1] = {e[1], I(amount)}
    end
    redis.call('HDEL', KEYS[2], member)
  end
  redis.call('ZREM', KEYS[3], member)
  redis.call('XADD', KEYS[4], '*', 'kind', 'reclaim', 'id', member, 'payer', ARGV[3],
    'ts', ARGV[1], 'units', '0', 'money', '0', 'alloc', cjson.encode(released))
end
return #members
