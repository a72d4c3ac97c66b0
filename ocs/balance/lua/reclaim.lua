-- reclaim.lua: release reservations whose reclaim deadline (Validity-Time + grace) has passed,
-- i.e. sessions that stopped sending CCR-U/T (a crashed gateway, a lost CCR-T).
--
-- THE RULE (see _shadow.lua, prepended): every input is validated and every change computed
-- against a shadow of the keys before the first write; `flush()` writes them all at the end
-- and nothing that can fail runs after it. An error leaves every key byte-identical.
--
-- KEYS[1] balances HASH, KEYS[2] rsv HASH, KEYS[3] rsvidx ZSET, KEYS[4] stream,
-- KEYS[5] limits HASH (a reservation's share of per-SIM caps, charge.lua KEYS[10])
-- ARGV[1] now (ms), ARGV[2] at most this many reservations, ARGV[3] payer tag
-- Returns the number of reservations reclaimed.
SCRIPT = 'reclaim.lua'

local now = int(ARGV[1], 'now')
local limit = int(ARGV[2], 'limit', 1)
if ARGV[3] == nil or ARGV[3] == '' then fail('payer tag is required') end
local members = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', I(now), 'LIMIT', 0, I(limit))
TYPED[KEYS[3]] = true
for _, member in ipairs(members) do
  local raw = hget(KEYS[2], member)
  local released = {}
  if raw then
    local r = decode(raw, 'reservation ', member)
    for _, e in ipairs(r.a or {}) do
      local bid = tostring(e[1])
      local amount = int(e[3], 'reserved amount of ', 0, member)
      hincr(KEYS[1], bid .. ':r', -amount)
      if not e[4] then hincr(KEYS[1], bid .. ':a', amount) end
      released[#released + 1] = {bid, I(amount)}
    end
    local units = r.l and int(r.lu, 'limit reservation of ', 0, member)
    for j = 1, r.l and #r.l or 0, 2 do  -- {field, period, ...}, `lu` units each
      local f = tostring(r.l[j])
      local st = hget(KEYS[5], f)
      if st then
        local p, u, rs, n = string.match(st, '^([^:]*):(%d+):(%d+):(%d)$')
        if not p then fail('limit ' .. f .. ' holds ' .. st) end
        if p == tostring(r.l[j + 1]) then
          hset(KEYS[5], f, p .. ':' .. u .. ':' .. I(math.max(int(rs, 'reserved') - units, 0))
            .. ':' .. n)
        end
      end
    end
    hdel(KEYS[2], member)
  end
  op('zset', 'ZREM', KEYS[3], member)
  op('stream', 'XADD', KEYS[4], '*', 'kind', 'reclaim', 'id', member, 'payer', ARGV[3],
    'ts', I(now), 'units', '0', 'money', '0', 'alloc', cjson.encode(released))
end
flush()
return #members
