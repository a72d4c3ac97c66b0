-- adjust.lua: credit, refund or resize one payer's buckets, with a record, idempotently.
--
-- KEYS[1] buckets HASH, KEYS[2] balances HASH, KEYS[3] done STRING, KEYS[4] stream
-- ARGV[1] request id, ARGV[2] now (ms), ARGV[3] result TTL (ms), ARGV[4] payer tag,
-- ARGV[5] JSON list of operations, each one of
--   {op="define", id, def={unit, prio, from, to, unlimited}, size}   create if absent
--   {op="resize", id, size}       set the credited total to size (a pool's size changed);
--                                 lifecycle credits ("<bid>:x": tier steps, renewals) stay
--   {op="credit", id, amount}     add to available and to the credited total (top-up)
--   {op="refund", unit, amount}   give back used units/money to the first bucket of the unit
-- ARGV[6] record context (JSON text)
-- Returns JSON {status, applied}.

local cached = redis.call('GET', KEYS[3])
if cached then return cached end
local function I(n) return string.format('%d', n) end
local now = tonumber(ARGV[2])
local ops = cjson.decode(ARGV[5])
local alloc = {}
local kind = 'adjust'

local function first_bucket(unit)
  local defs = redis.call('HGETALL', KEYS[1])
  local best, bprio
  for i = 1, #defs, 2 do
    local d = cjson.decode(defs[i + 1])
    local to = tonumber(d.to or 0)
    if d.unit == unit and (to == 0 or now < to) then
      local p = tonumber(d.prio or 0)
      if best == nil or p < bprio or (p == bprio and defs[i] < best) then
        best, bprio = defs[i], p
      end
    end
  end
  return best
end

for _, op in ipairs(ops) do
  if op.op == 'define' then
    if redis.call('HSETNX', KEYS[1], op.id, cjson.encode(op.def)) == 1 then
      local size = tonumber(op.size)
      redis.call('HSET', KEYS[2], op.id .. ':a', I(size), op.id .. ':r', '0',
                 op.id .. ':u', '0', op.id .. ':i', I(size))
      alloc[#alloc + 1] = {op.id, I(size)}
    else
      redis.call('HSET', KEYS[1], op.id, cjson.encode(op.def))
    end
  elseif op.op == 'resize' then
    local credited = tonumber(redis.call('HGET', KEYS[2], op.id .. ':i') or '0')
    local lifecycle = tonumber(redis.call('HGET', KEYS[2], op.id .. ':x') or '0')
    local delta = tonumber(op.size) - (credited - lifecycle)
    if delta ~= 0 then
      redis.call('HINCRBY', KEYS[2], op.id .. ':a', delta)
      redis.call('HINCRBY', KEYS[2], op.id .. ':i', delta)
      alloc[#alloc + 1] = {op.id, I(delta)}
    end
  elseif op.op == 'credit' then
    local amount = tonumber(op.amount)
    redis.call('HINCRBY', KEYS[2], op.id .. ':a', amount)
    redis.call('HINCRBY', KEYS[2], op.id .. ':i', amount)
    alloc[#alloc + 1] = {op.id, I(amount)}
  elseif op.op == 'refund' then
    kind = 'refund'
    local bid = first_bucket(op.unit)
    if bid == nil then
      local res = cjson.encode({status = 'no_bucket', applied = 0})
      return res
    end
    local amount = tonumber(op.amount)
    redis.call('HINCRBY', KEYS[2], bid .. ':a', amount)
    redis.call('HINCRBY', KEYS[2], bid .. ':u', -amount)
    alloc[#alloc + 1] = {bid, I(-amount)}
  end
end

if #alloc > 0 then
  redis.call('XADD', KEYS[4], '*', 'kind', kind, 'id', ARGV[1], 'payer', ARGV[4],
    'ts', I(now), 'units', '0', 'money', '0', 'alloc', cjson.encode(alloc), 'ctx', ARGV[6])
end
local res = cjson.encode({status = 'ok', applied = #alloc})
redis.call('SET', KEYS[3], res, 'PX', ARGV[3])
return res
