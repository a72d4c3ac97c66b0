-- charge.lua: the one script that moves a payer's units on the real-time path.
--
-- In one atomic step it (1) returns the stored result if this request id was seen before,
-- (2) commits `used` units against the session's reservation and releases the rest,
-- (3) reserves a new grant (fair share near exhaustion), (4) appends the rated usage record
-- to the payer's stream, and (5) stores the result under the request id.
--
-- Every key shares the payer hash tag {tenant:kind:id}.
-- KEYS[1] buckets  HASH  bucket id -> JSON definition {unit, prio, from, to, unlimited}
-- KEYS[2] balances HASH  "<bid>:a" available, "<bid>:r" reserved, "<bid>:u" used, "<bid>:i" credited
-- KEYS[3] rsv      HASH  "<session>|<rating group>" -> JSON reservation
-- KEYS[4] rsvidx   ZSET  reservation member scored by its reclaim deadline (ms)
-- KEYS[5] done     STRING result of this request id (idempotency), with a TTL
-- KEYS[6] stream   STREAM rated usage records of this payer
-- KEYS[7] life     HASH  lifecycle (docs/lifecycle.md): period, adaptive tier and ladder,
--                        auto top-off rule (catalogue "topoff", API "topoff_api" overrides;
--                        {off=true}: none) and its per-period counter; read only when the
--                        payer cannot cover a request, or when a bucket carries an auto
--                        top-off threshold ("thr", units) and this call leaves the payer
--                        below it (never on the common path)
--
-- ARGV[1]  request id          ARGV[2]  now (ms)          ARGV[3]  unit
-- ARGV[4]  used units          ARGV[5]  wanted units      ARGV[6]  minimum grant
-- ARGV[7]  rate numerator      ARGV[8]  rate denominator (0: money buckets unusable)
-- ARGV[9]  reclaim deadline (ms, absolute)                ARGV[10] result TTL (ms)
-- ARGV[11] reservation member  ARGV[12] mode: "session" | "debit"
-- ARGV[13] record context (JSON text, stored as is)       ARGV[14] payer tag
--
-- Returns the JSON result: {status, granted, money, units, cost, overrun, left, live}.
-- Lua numbers are doubles: amounts are exact up to 2^53.

local cached = redis.call('GET', KEYS[5])
if cached then
  return cached
end

local now = tonumber(ARGV[2])
local unit = ARGV[3]
local used = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local min_grant = tonumber(ARGV[6])
local num = tonumber(ARGV[7])
local den = tonumber(ARGV[8])
local deadline = tonumber(ARGV[9])
local member = ARGV[11]
local mode = ARGV[12]

local function I(n) return string.format('%d', n) end

-- Usable buckets in consumption order: priority, then earliest expiry, then id. A bucket
-- on hold (a pool suspended for an unpaid renewal) is not usable. `thr`: the auto top-off
-- threshold a bucket of this unit is marked with (lifecycle.lua), nil for none.
local order, thr
local function build_order()
  local defs = redis.call('HGETALL', KEYS[1])
  order = {}
  for i = 1, #defs, 2 do
    local d = cjson.decode(defs[i + 1])
    if d.thr and d.unit == unit then thr = tonumber(d.thr) end
    local to = tonumber(d.to or 0)
    local from = tonumber(d.from or 0)
    local money = d.unit == 'money'
    if (d.unit == unit or (money and den > 0)) and from <= now and (to == 0 or now < to)
        and not d.hold then
      order[#order + 1] = {id = defs[i], prio = tonumber(d.prio or 0), to = to, money = money,
                           unlimited = d.unlimited and true or false}
    end
  end
  table.sort(order, function(a, b)
    if a.prio ~= b.prio then return a.prio < b.prio end
    local ta = a.to == 0 and math.huge or a.to
    local tb = b.to == 0 and math.huge or b.to
    if ta ~= tb then return ta < tb end
    return a.id < b.id
  end)
end
build_order()

local function avail(b)
  return tonumber(redis.call('HGET', KEYS[2], b.id .. ':a') or '0')
end

-- Units a bucket can still cover, and the money needed for `u` units of a money bucket.
local function cost(u) return math.ceil(u * num / den) end
local function capacity(b)
  if b.unlimited then return math.huge end
  local a = avail(b)
  if b.money then
    if num == 0 then return math.huge end
    return math.floor(a * den / num)
  end
  return a
end

-- Take `need` units from the buckets. `field` receives the amounts ('r' reserve, 'u' use).
-- Returns the units taken and the allocation {{bid, units, amount}}.
local function take(need, field)
  local got, alloc = 0, {}
  for _, b in ipairs(order) do
    if need - got <= 0 then break end
    local u = math.min(need - got, capacity(b))
    if u > 0 then
      local amount = u
      if b.money then amount = cost(u) end
      if not b.unlimited then redis.call('HINCRBY', KEYS[2], b.id .. ':a', -amount) end
      redis.call('HINCRBY', KEYS[2], b.id .. ':' .. field, amount)
      alloc[#alloc + 1] = {b.id, u, amount}
      got = got + u
    end
  end
  return got, alloc
end

local total_units = 0
local function count_units()
  total_units = 0
  for _, b in ipairs(order) do total_units = total_units + capacity(b) end
end
count_units()

-- Lifecycle records are 'adjust' records, like a top-off bought over the API: the bill run
-- reads purchases (context "api") from those.
local function record(id, alloc, ctx)
  redis.call('XADD', KEYS[6], '*', 'kind', 'adjust', 'id', id, 'payer', ARGV[14], 'ts', I(now),
    'units', '0', 'money', '0', 'alloc', cjson.encode(alloc), 'ctx', cjson.encode(ctx))
end

-- Lifecycle, when what the payer has cannot cover `need` units: an adaptive pool steps up
-- its tier ladder (the last tier is the cap), then the auto top-off add-on is bought, at
-- most `cap` times in the current period. Both credit buckets and write their record here,
-- in the same atomic step as the reservation that needed them. `early`: called because
-- the payer fell below its auto top-off threshold (`need` = the threshold), not short:
-- no tier step, and no purchase while the ladder has tiers left (they come first). At
-- most one purchase per call (`bought`).
local bought = false
local function replenish(need, early)
  local life = redis.call('HMGET', KEYS[7], 'ladder', 'tier', 'topoff', 'period', 'hold',
                          'topoff_api')
  if life[5] then return end  -- suspended: no step, no purchase
  life[3] = life[6] or life[3]  -- the API's auto top-off setting overrides the catalogue's
  local period = life[4] or ''
  local changed = false
  if life[1] then
    local lad = cjson.decode(life[1])
    local tier = tonumber(life[2] or '0')
    local start = tier
    if early and lad.u == unit and tier + 1 < #lad.s then return end
    while not early and lad.u == unit and total_units < need and tier + 1 < #lad.s do
      local delta = lad.s[tier + 2] - lad.s[tier + 1]
      redis.call('HINCRBY', KEYS[2], lad.b .. ':a', delta)
      redis.call('HINCRBY', KEYS[2], lad.b .. ':i', delta)
      redis.call('HINCRBY', KEYS[2], lad.b .. ':x', delta)  -- not the catalogue's size
      tier = tier + 1
      total_units = total_units + delta
      record('tier:' .. ARGV[14] .. ':' .. period .. ':' .. tier, {{lad.b, I(delta)}},
        {api = 'tier-step', pool = lad.pool, account = lad.account, tier = tier,
         size = lad.s[tier + 1], period = period})
    end
    if tier ~= start then
      redis.call('HSET', KEYS[7], 'tier', I(tier))
      changed = true
    end
  end
  if life[3] and total_units < need and not bought then
    local rule = cjson.decode(life[3])
    local counter = 'topoffs:' .. period
    local n = tonumber(redis.call('HGET', KEYS[7], counter) or '0')
    if not rule.off and rule.u == unit and (rule.cap == 0 or n < rule.cap) then
      n = n + 1
      local bid = rule.pool .. ':auto:' .. period .. ':' .. n
      redis.call('HSET', KEYS[1], bid, cjson.encode({unit = unit, prio = rule.prio, from = 0,
        to = I(now + rule.ms), unlimited = false}))
      redis.call('HSET', KEYS[2], bid .. ':a', I(rule.units), bid .. ':r', '0',
        bid .. ':u', '0', bid .. ':i', I(rule.units))
      redis.call('HSET', KEYS[7], counter, I(n))
      record('auto-top-off:' .. ARGV[14] .. ':' .. period .. ':' .. n,
        {{bid, I(rule.units)}},
        {api = 'auto-top-off', addon = rule.addon, price = rule.price,
         currency = rule.currency, pool = rule.pool, account = rule.account,
         cap_period = period, count = n, threshold = early and need or nil})
      changed = true
      bought = true
    end
  end
  if changed then
    build_order()
    count_units()
  end
end

if mode == 'debit' and total_units < used then replenish(used) end

-- A debit (event) is all or nothing, and needs no reservation.
if mode == 'debit' and total_units < used then
  local res = cjson.encode({status = 'insufficient', granted = 0, money = 0, units = 0, cost = 0,
                            overrun = 0, left = total_units == math.huge and -1 or total_units,
                            live = redis.call('ZCARD', KEYS[4])})
  redis.call('SET', KEYS[5], res, 'PX', ARGV[10])
  return res
end

-- 1. Commit the used units against the reservation, in its allocation order; release the rest.
local committed, charged, uses = 0, 0, {}
local had_rsv = 0
local raw = redis.call('HGET', KEYS[3], member)
if raw then
  had_rsv = 1
  local r = cjson.decode(raw)
  local rnum, rden = tonumber(r.n), tonumber(r.d)
  for _, e in ipairs(r.a) do
    local bid, units, amount = e[1], tonumber(e[2]), tonumber(e[3])
    local u = math.min(used - committed, units)
    local spent = u
    if units ~= amount then  -- a money bucket: price the used part at the reserved rate
      spent = u == units and amount or math.min(amount, math.ceil(u * rnum / rden))
    end
    redis.call('HINCRBY', KEYS[2], bid .. ':r', -amount)
    redis.call('HINCRBY', KEYS[2], bid .. ':u', spent)
    if not e[4] then redis.call('HINCRBY', KEYS[2], bid .. ':a', amount - spent) end
    if u > 0 then
      uses[#uses + 1] = {bid, u, spent}
      if units ~= amount then charged = charged + spent end
    end
    committed = committed + u
  end
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  -- units released back count again as available for the grant below
  count_units()
end

-- Usage beyond the reservation (or a debit) is taken from what is available now.
local overrun = 0
if used > committed then
  local got, extra = take(used - committed, 'u')
  for _, e in ipairs(extra) do
    uses[#uses + 1] = e
    if e[2] ~= e[3] then charged = charged + e[3] end
  end
  overrun = used - committed - got
  committed = committed + got
  count_units()
end

-- 2. Reserve a new grant. Fair share: with L live reservations on the payer, a session gets
-- at most available / (L + 1), but never less than the minimum grant (when available).
local live = redis.call('ZCARD', KEYS[4])
local granted, money = 0, 0
if want > 0 and mode == 'session' and total_units < want then replenish(want) end
if want > 0 and mode == 'session' then
  local grant = want
  if total_units ~= math.huge and total_units < want * (live + 1) then
    grant = math.max(math.floor(total_units / (live + 1)), min_grant)
    grant = math.min(grant, want, total_units)
  end
  if grant > 0 then
    local got, alloc = take(grant, 'r')
    granted = got
    local enc = {}
    for _, e in ipairs(alloc) do
      local unl = false
      for _, b in ipairs(order) do if b.id == e[1] then unl = b.unlimited end end
      enc[#enc + 1] = {e[1], I(e[2]), I(e[3]), unl or nil}
      if e[2] ~= e[3] then money = money + e[3] end
    end
    if got > 0 then
      redis.call('HSET', KEYS[3], member,
        cjson.encode({a = enc, n = I(num), d = I(den), u = unit, t = I(now)}))
      redis.call('ZADD', KEYS[4], deadline, member)
      live = live + 1
    end
  end
end

-- 3. The rated usage record, in the same atomic step as the balance change.
if committed > 0 or overrun > 0 then
  local alloc = {}
  for _, e in ipairs(uses) do alloc[#alloc + 1] = {e[1], I(e[3])} end
  redis.call('XADD', KEYS[6], '*', 'kind', 'usage', 'id', ARGV[1], 'payer', ARGV[14],
    'ts', I(now), 'unit', unit, 'units', I(committed), 'money', I(charged),
    'overrun', I(overrun), 'alloc', cjson.encode(alloc), 'ctx', ARGV[13])
end

local left = 0
for _, b in ipairs(order) do left = left + capacity(b) end
-- Auto top-off threshold: this call leaves the payer below it, so the add-on is bought now,
-- once per call and within the cap; the next call finds the payer above it again.
if thr and not bought and left < thr then
  total_units = left
  replenish(thr, true)
  if bought then left = total_units end
end
-- Nothing left now, but the lifecycle can still add units (the next adaptive tier, an auto
-- top-off under its cap): report those, so that the grant is not announced as final units.
if left == 0 then
  local life = redis.call('HMGET', KEYS[7], 'ladder', 'tier', 'topoff', 'period', 'hold',
                          'topoff_api')
  life[3] = life[6] or life[3]
  if not life[5] then
    if life[1] then
      local lad = cjson.decode(life[1])
      local tier = tonumber(life[2] or '0')
      if lad.u == unit and tier + 1 < #lad.s then left = lad.s[tier + 2] - lad.s[tier + 1] end
    end
    if left == 0 and life[3] then
      local rule = cjson.decode(life[3])
      local n = tonumber(redis.call('HGET', KEYS[7], 'topoffs:' .. (life[4] or '')) or '0')
      if not rule.off and rule.u == unit and (rule.cap == 0 or n < rule.cap) then
        left = rule.units
      end
    end
  end
end
if left == math.huge then left = -1 end
local status = 'ok'
if mode == 'session' and want > 0 and granted == 0 then status = 'exhausted' end
if mode == 'session' and had_rsv == 0 and used > 0 then status = 'no_reservation' end
local res = cjson.encode({status = status, granted = I(granted), money = I(money),
                          units = I(committed), cost = I(charged), overrun = I(overrun),
                          left = I(left), live = live})
redis.call('SET', KEYS[5], res, 'PX', ARGV[10])
return res
