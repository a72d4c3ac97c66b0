-- adjust.lua: credit, refund or resize one payer's buckets, with a record, idempotently.
--
-- THE RULE (see _shadow.lua, prepended): every input is validated and every change computed
-- against a shadow of the keys before the first write; `flush()` writes them all at the end
-- and nothing that can fail runs after it. An error, or a refund that finds no bucket,
-- leaves every key byte-identical (no operation of the list is applied).
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
SCRIPT = 'adjust.lua'

local cached = redis.call('GET', KEYS[3])
if cached then return cached end
TYPED[KEYS[3]] = true
local now = int(ARGV[2], 'now')
local ttl = int(ARGV[3], 'result TTL', 1)
if ARGV[4] == nil or ARGV[4] == '' then fail('payer tag is required') end
local ops = decode(ARGV[5] or '', 'operations')
if ARGV[6] == nil then fail('record context is required') end
local alloc = {}
local kind = 'adjust'

local function bucket_id(v, what)
  if type(v) ~= 'string' or v == '' then fail(what .. ': bucket id must be a string') end
  return v
end

local function first_bucket(unit)
  local defs = hgetall(KEYS[1])
  local best, bprio
  for i = 1, #defs, 2 do
    local d = decode(defs[i + 1], 'bucket ', defs[i])
    local to = int(d.to or 0, 'valid_to of ', 0, defs[i])
    if d.unit == unit and (to == 0 or now < to) then
      local p = int(d.prio or 0, 'prio of ', -MAX_INT + 1, defs[i])
      if best == nil or p < bprio or (p == bprio and defs[i] < best) then
        best, bprio = defs[i], p
      end
    end
  end
  return best
end

for n, o in ipairs(ops) do
  local what = 'operation ' .. n
  if type(o) ~= 'table' then fail(what .. ' is not an object') end
  if o.op == 'define' then
    local id = bucket_id(o.id, what)
    if type(o.def) ~= 'table' then fail(what .. ': def must be an object') end
    local size = int(o.size, what .. ' size', -MAX_INT + 1)
    local def = cjson.encode(o.def)
    if not hget(KEYS[1], id) then
      hset(KEYS[1], id, def)
      hset(KEYS[2], id .. ':a', I(size))
      hset(KEYS[2], id .. ':r', '0')
      hset(KEYS[2], id .. ':u', '0')
      hset(KEYS[2], id .. ':i', I(size))
      alloc[#alloc + 1] = {id, I(size)}
    else
      hset(KEYS[1], id, def)
    end
  elseif o.op == 'resize' then
    local id = bucket_id(o.id, what)
    local size = int(o.size, what .. ' size', -MAX_INT + 1)
    local credited = hnum(KEYS[2], id .. ':i')
    local lifecycle = hnum(KEYS[2], id .. ':x')
    local delta = size - (credited - lifecycle)
    if delta ~= 0 then
      hincr(KEYS[2], id .. ':a', delta)
      hincr(KEYS[2], id .. ':i', delta)
      alloc[#alloc + 1] = {id, I(delta)}
    end
  elseif o.op == 'credit' then
    local id = bucket_id(o.id, what)
    local amount = int(o.amount, what .. ' amount', -MAX_INT + 1)
    hincr(KEYS[2], id .. ':a', amount)
    hincr(KEYS[2], id .. ':i', amount)
    alloc[#alloc + 1] = {id, I(amount)}
  elseif o.op == 'refund' then
    kind = 'refund'
    local amount = int(o.amount, what .. ' amount')
    local bid = first_bucket(o.unit)
    if bid == nil then
      -- nothing of the list is applied (not even the operations before this one)
      return cjson.encode({status = 'no_bucket', applied = 0})
    end
    hincr(KEYS[2], bid .. ':a', amount)
    hincr(KEYS[2], bid .. ':u', -amount)
    alloc[#alloc + 1] = {bid, I(-amount)}
  else
    fail(what .. ': unknown op ' .. tostring(o.op))
  end
end

if #alloc > 0 then
  op('stream', 'XADD', KEYS[4], '*', 'kind', kind, 'id', ARGV[1], 'payer', ARGV[4],
    'ts', I(now), 'units', '0', 'money', '0', 'alloc', cjson.encode(alloc), 'ctx', ARGV[6])
end
local res = cjson.encode({status = 'ok', applied = #alloc})
op('string', 'SET', KEYS[3], res, 'PX', I(ttl))
flush()
return res
