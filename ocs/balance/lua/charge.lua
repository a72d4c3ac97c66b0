-- charge.lua: the one script that moves a payer's units on the real-time path.
--
-- THE RULE (see _shadow.lua, prepended): every input is validated and every change computed
-- against a shadow of the keys before the first write; `flush()` writes them all at the end
-- and nothing that can fail runs after it. An error leaves every key byte-identical.
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
-- KEYS[8] counters HASH  "<period>|<counter key>" -> units: the period counters (tiers,
--                        allowances) of the usage this payer pays with a price
-- KEYS[9] events   STREAM the payer's event outbox (emit, _events.lua; docs/webhooks.md):
--                        a threshold crossed, the quota exhausted, an auto top-off bought.
--                        The thresholds and their marks are in KEYS[7]: "alerts_api" (set
--                        over the API) overrides "alerts" (the catalogue's), JSON {u = unit,
--                        b = base of the percentages (absent: what was credited), p = {pct},
--                        a = {units left}}; "alerted" = {p = period, f = {mark = true}}
--                        (one HMGET of KEYS[7] per call: the common path's only extra read)
-- KEYS[10] limits  HASH  "<imsi>|<scope>|<cap>" -> "<period>:<used>:<reserved>:<reached>":
--                        the per-SIM caps (docs/limits.md) of the usage this payer pays,
--                        one field per cap of a SIM (scope "*") or twin; read only when
--                        ARGV[17] counts caps or a reservation holds some
--
-- ARGV[1]  request id          ARGV[2]  now (ms)          ARGV[3]  unit
-- ARGV[4]  used units          ARGV[5]  wanted units      ARGV[6]  minimum grant
-- ARGV[7]  rate numerator      ARGV[8]  rate denominator (0: money buckets unusable)
-- ARGV[9]  reclaim deadline (ms, absolute)                ARGV[10] result TTL (ms)
-- ARGV[11] reservation member  ARGV[12] mode: "session" | "debit"
-- ARGV[13] record context (JSON text, stored as is)       ARGV[14] payer tag
-- ARGV[15] price: the exact money of the `used` units as rating priced them (docs/rating.md
--          rule 8), or "" (absent). With a price the usage is paid in money alone (a
--          wallet): the commit debits exactly this amount from the money buckets (the
--          reservation's money first, released, then what is available), and what the money
--          cannot cover is the result's `short`; the rate (ARGV[7]/ARGV[8]) then only sizes
--          reservations (conservatively: the caller passes the highest tier's rate). Without
--          one, money buckets pay `ceil(units * rate)` (a postpaid pool's credit limit).
-- ARGV[16] counters the price was computed from: JSON [[field, expected, delta], ...] or "".
--          When a counter of KEYS[8] is not at `expected` (another usage moved it since the
--          caller read it) the script writes nothing and returns {status="stale", ctr}
--          with the current values: the caller prices again. Otherwise each counter moves
--          by `delta` with the commit, in the same step as the debit it priced.
-- ARGV[17] the number n of per-SIM caps this usage counts against ("" or 0: none); they
--          are ARGV[19..18+5n], five arguments a cap: field, cap, period, enforce, action
--          (plain arguments, no JSON to decode: the common path of a capped SIM).
--          `period` is the id of the cap's current period (a state of another period
--          starts over at zero); `enforce` 1: the grant is cut to what remains under the
--          cap and a debit over it is refused (status "limited"); 0: counted only (notify). When a cap's used units reach it, the first time in its
--          period, the event sim.limit_reached (with `action`) goes to the outbox KEYS[9].
--          A reservation counts against its caps until its commit, release or reclaim.
-- ARGV[18] the upper levels of a multi-level (B2B2B) usage, or "": see _levels.lua
--          (prepended), which reads them with their keys KEYS[11..]. Every reserved level
--          holds the grant too, the grant is the smallest any level allows, and every level
--          commits, releases and records in this same call.
--
-- Returns the JSON result: {status, granted, money, units, cost, overrun, short, left, live,
-- ctr, lim, hit} (ctr: the counters of ARGV[16] after this call; lim: the index (1..n) of
-- an enforced cap with nothing left under it after this call, or of the cap that
-- refused it, 0: none; hit: the indices of the caps whose used units reached the cap in
-- this call, the first time in their period; lv: per upper level {units, money, overrun,
-- short, left}, and then left is the smallest any level still has).
-- Lua numbers are doubles: amounts are exact up to 2^53 (checked).
SCRIPT = 'charge.lua'

local cached = redis.call('GET', KEYS[5])
if cached then
  return cached
end
TYPED[KEYS[5]] = true

local now = int(ARGV[2], 'now')
local unit = ARGV[3]
local used = int(ARGV[4], 'used units')
local want = int(ARGV[5], 'wanted units')
local min_grant = int(ARGV[6], 'minimum grant')
local num = int(ARGV[7], 'rate numerator')
local den = int(ARGV[8], 'rate denominator')
local deadline = int(ARGV[9], 'deadline')
local ttl = int(ARGV[10], 'result TTL', 1)
local member = ARGV[11]
local mode = ARGV[12]
local exact = nil
if ARGV[15] ~= nil and ARGV[15] ~= '' then exact = int(ARGV[15], 'price') end
if unit == nil or unit == '' then fail('unit is required') end
if member == nil or member == '' then fail('reservation member is empty') end
if mode ~= 'session' and mode ~= 'debit' then fail('mode must be session or debit') end
if exact and den == 0 then fail('a price needs money buckets (rate denominator > 0)') end
if ARGV[13] == nil or ARGV[14] == nil then fail('record context and payer tag are required') end

-- The counters the price was computed from: all as expected, or nothing is written.
local counters, ctr = {}, nil
if ARGV[16] ~= nil and ARGV[16] ~= '' then
  if not exact then fail('counters come with a price') end
  ctr = {}
  local stale = false
  for i, c in ipairs(decode(ARGV[16], 'counters')) do
    if type(c) ~= 'table' or type(c[1]) ~= 'string' then fail('counter ' .. i .. ' is not [field, expected, delta]') end
    local expected = int(c[2], 'counter ', 0, c[1], ' expected')
    local delta = int(c[3], 'counter ', 0, c[1], ' delta')
    local current = hnum(KEYS[8], c[1])
    counters[#counters + 1] = {c[1], delta}
    ctr[c[1]] = I(current)
    if current ~= expected then stale = true end
  end
  if stale then return cjson.encode({status = 'stale', ctr = ctr}) end
end

-- Per-SIM caps: the state of each field, loaded once, changed in place, written at the end.
local LIM = {}
local function lim_load(f)
  local st = LIM[f]
  if st then return st end
  local raw = hget(KEYS[10], f)
  if raw then
    local p, u, r, n = string.match(raw, '^([^:]*):(%d+):(%d+):(%d)$')
    if not p then fail('limit ' .. f .. ' holds ' .. raw) end
    st = {p = p, u = int(u, 'limit used'), r = int(r, 'limit reserved'), n = int(n, 'reached')}
  else
    st = {p = '', u = 0, r = 0, n = 0}
  end
  LIM[f] = st
  return st
end
local caps = {}
local ncaps = 0
if ARGV[17] ~= nil and ARGV[17] ~= '' then ncaps = int(ARGV[17], 'number of caps', 0) end
for i = 1, ncaps do
  local k = 13 + 5 * i  -- ARGV[k+1..k+5]: field, cap, period, enforce, action
  local f, p, act = ARGV[k + 1], ARGV[k + 3], ARGV[k + 5]
  if act == nil or p == '' or string.find(p, ':', 1, true) or not string.find(f, '|', 1, true)
      then
    fail('limit ' .. i .. ' is not field, cap, period, enforce, action')
  end
  local st = lim_load(f)
  if st.p ~= p then st.p, st.u, st.r, st.n = p, 0, 0, 0 end
  caps[i] = {f = f, cap = int(ARGV[k + 2], 'cap of ', 0, f), on = ARGV[k + 4] == '1', s = st,
             act = act}
end
-- What the enforced caps still allow (nil: none is enforced), and the cap that allows least.
local function lim_room()
  local room, at = nil, 0
  for i, c in ipairs(caps) do
    if c.on then
      local left = math.max(c.cap - c.s.u - c.s.r, 0)
      if room == nil or left < room then room, at = left, i end
    end
  end
  return room, at
end

-- Usable buckets in consumption order: priority, then earliest expiry, then id. A bucket
-- on hold (a pool suspended for an unpaid renewal) is not usable. `thr`: the auto top-off
-- threshold a bucket of this unit is marked with (lifecycle.lua), nil for none. With a
-- price only money buckets pay.
local order, thr, all_buckets
local function build_order()
  local defs = hgetall(KEYS[1])
  order, all_buckets = {}, {}
  for i = 1, #defs, 2 do
    local d = decode(defs[i + 1], 'bucket ', defs[i])
    if d.thr and d.unit == unit then thr = int(d.thr, 'threshold of ', 0, defs[i]) end
    local to = int(d.to or 0, 'valid_to of ', 0, defs[i])
    local from = int(d.from or 0, 'valid_from of ', 0, defs[i])
    local money = d.unit == 'money'
    -- one table a bucket: a usable one is in `order` too (id, unit and unlimited as
    -- all_buckets reads them; prio, to and money for the order)
    local b = {id = defs[i], unit = d.unit, unlimited = d.unlimited and true or false}
    all_buckets[#all_buckets + 1] = b
    if ((d.unit == unit and not exact) or (money and den > 0)) and from <= now
        and (to == 0 or now < to) and not d.hold then
      b.prio, b.to, b.money = int(d.prio or 0, 'prio of ', -MAX_INT + 1, defs[i]), to, money
      order[#order + 1] = b
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
  return hnum(KEYS[2], b.id .. ':a')
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
      if not b.unlimited then hincr(KEYS[2], b.id .. ':a', -amount) end
      hincr(KEYS[2], b.id .. ':' .. field, amount)
      alloc[#alloc + 1] = {b.id, u, amount}
      got = got + u
    end
  end
  return got, alloc
end

-- Money (with a price): what the money buckets hold now, and taking `amount` of it as used.
local function money_left()
  local m = 0
  for _, b in ipairs(order) do
    if b.money then
      if b.unlimited then return math.huge end
      m = m + math.max(avail(b), 0)
    end
  end
  return m
end
local function take_money(amount)
  local got, alloc = 0, {}
  for _, b in ipairs(order) do
    if amount - got <= 0 then break end
    if b.money then
      local m = amount - got
      if not b.unlimited then m = math.min(m, math.max(avail(b), 0)) end
      if m > 0 then
        if not b.unlimited then hincr(KEYS[2], b.id .. ':a', -m) end
        hincr(KEYS[2], b.id .. ':u', m)
        alloc[#alloc + 1] = {b.id, 0, m}
        got = got + m
      end
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
local start_units = total_units  -- before this call: re-arms a quota.exhausted mark

-- Lifecycle records are 'adjust' records, like a top-off bought over the API: the bill run
-- reads purchases (context "api") from those.
local function record(id, alloc, ctx)
  op('stream', 'XADD', KEYS[6], '*', 'kind', 'adjust', 'id', id, 'payer', ARGV[14],
    'ts', I(now), 'units', '0', 'money', '0', 'alloc', cjson.encode(alloc),
    'ctx', cjson.encode(ctx))
end

local function life_fields()
  local life = {}
  for i, f in ipairs({'ladder', 'tier', 'topoff', 'period', 'hold', 'topoff_api'}) do
    life[i] = hget(KEYS[7], f)
  end
  life[3] = life[6] or life[3]  -- the API's auto top-off setting overrides the catalogue's
  return life
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
  local life = life_fields()
  if life[5] then return end  -- suspended: no step, no purchase
  local period = life[4] or ''
  local changed = false
  if life[1] then
    local lad = decode(life[1], 'ladder')
    local tier = int(life[2] or '0', 'tier')
    local start = tier
    if early and lad.u == unit and tier + 1 < #lad.s then return end
    while not early and lad.u == unit and total_units < need and tier + 1 < #lad.s do
      local delta = int(lad.s[tier + 2], 'ladder size') - int(lad.s[tier + 1], 'ladder size')
      hincr(KEYS[2], lad.b .. ':a', delta)
      hincr(KEYS[2], lad.b .. ':i', delta)
      hincr(KEYS[2], lad.b .. ':x', delta)  -- not the catalogue's size
      tier = tier + 1
      total_units = total_units + delta
      record('tier:' .. ARGV[14] .. ':' .. period .. ':' .. tier, {{lad.b, I(delta)}},
        {api = 'tier-step', pool = lad.pool, account = lad.account, tier = tier,
         size = lad.s[tier + 1], period = period})
    end
    if tier ~= start then
      hset(KEYS[7], 'tier', I(tier))
      changed = true
    end
  end
  if life[3] and total_units < need and not bought then
    local rule = decode(life[3], 'auto top-off rule')
    local counter = 'topoffs:' .. period
    local n = int(hget(KEYS[7], counter) or '0', counter)
    if not rule.off and rule.u == unit and (rule.cap == 0 or n < rule.cap) then
      local units = int(rule.units, 'auto top-off units')
      local ms = int(rule.ms, 'auto top-off validity')
      n = n + 1
      local bid = rule.pool .. ':auto:' .. period .. ':' .. n
      hset(KEYS[1], bid, cjson.encode({unit = unit, prio = rule.prio, from = 0,
        to = I(now + ms), unlimited = false}))
      hset(KEYS[2], bid .. ':a', I(units))
      hset(KEYS[2], bid .. ':r', '0')
      hset(KEYS[2], bid .. ':u', '0')
      hset(KEYS[2], bid .. ':i', I(units))
      hset(KEYS[7], counter, I(n))
      record('auto-top-off:' .. ARGV[14] .. ':' .. period .. ':' .. n,
        {{bid, I(units)}},
        {api = 'auto-top-off', addon = rule.addon, price = rule.price,
         currency = rule.currency, pool = rule.pool, account = rule.account,
         cap_period = period, count = n, threshold = early and need or nil})
      emit(KEYS[9], ARGV[14], now, 'topoff.purchased', period .. ':' .. n, nil,
        {addon = rule.addon, units = units, price = int(rule.price or 0, 'top-off price'),
         currency = rule.currency, period = period, count = n, automatic = true})
      changed = true
      bought = true
    end
  end
  if changed then
    build_order()
    count_units()
  end
end

local upper = LV.load(ARGV[18], unit, now)
local live = redis.call('ZCARD', KEYS[4])
TYPED[KEYS[4]] = true

-- Events of this call (docs/webhooks.md), written with the other writes by flush(): each
-- threshold of the payer crossed, and the quota exhausted, once per period (the marks in
-- KEYS[7] "alerted"; a payer without a period, a wallet, re-arms a mark once its condition
-- no longer holds, e.g. after a top-up). `left`: what the call's unit has left. A usage
-- granted while Redis was unreachable and charged now by the failover replay (its context
-- says "failover":true, ocs.charging.failover) is an outage.granted event: `units`, `money`.
local function subject_of_call()
  local ok, ctx = pcall(cjson.decode, ARGV[13])
  if ok and type(ctx) == 'table' and type(ctx.imsi) == 'string' then return {imsi = ctx.imsi} end
  return nil
end
local function events(status, short, left, units, money)
  if units > 0 and string.find(ARGV[13], '"failover":true', 1, true) then
    emit(KEYS[9], ARGV[14], now, 'outage.granted', ARGV[1], subject_of_call(),
      {unit = unit, units = units, money = money, short = short})
  end
  local f = redis.call('HMGET', KEYS[7], 'alerts_api', 'alerts', 'alerted', 'period')
  TYPED[KEYS[7]] = true
  local cfg_raw, period = f[1] or f[2], f[4] or ''
  local out = status == 'exhausted' or status == 'insufficient' or short > 0
  if not cfg_raw and not f[3] and not out then return end  -- the common path
  local marks, changed = {}, false
  if f[3] then
    local m = decode(f[3], 'alerted marks')
    if m.p == period and type(m.f) == 'table' then marks = m.f else changed = true end
  end
  -- `was`: whether the condition held before this call (false: it did not, so a mark left
  -- from before a top-up is stale; nil: not known)
  local function mark(key, hit, was, rearm, etype, data)
    if hit and (not marks[key] or was == false) then
      marks[key], changed = true, true
      data.period = period
      emit(KEYS[9], ARGV[14], now, etype, ARGV[1] .. '|' .. key, subject_of_call(), data)
    elseif not hit and marks[key] and rearm then
      marks[key], changed = nil, true
    end
  end
  -- whether `mark` would do anything: the event's data is built only then (most calls cross
  -- nothing, and a table per threshold per call is what the common path paid for)
  local function due(key, hit, was, rearm)
    if hit then return not marks[key] or was == false end
    return marks[key] and rearm
  end
  local xkey, xrearm = 'x:' .. unit, left ~= 0 or start_units > 0
  if due(xkey, out, nil, xrearm) then
    mark(xkey, out, nil, xrearm, 'quota.exhausted',
      {unit = unit, status = status, short = short, left = math.max(left, 0)})
  end
  if cfg_raw then
    local cfg = decode(cfg_raw, 'thresholds')
    local u, units_left, credited, unlimited = tostring(cfg.u), 0, 0, false
    local given = cfg.b and int(cfg.b, 'threshold base')  -- else what was credited
    for _, b in ipairs(all_buckets) do
      if b.unit == u then
        if b.unlimited then unlimited = true end
        units_left = units_left + hnum(KEYS[2], b.id .. ':a') + hnum(KEYS[2], b.id .. ':r')
        if not given then credited = credited + hnum(KEYS[2], b.id .. ':i') end
      end
    end
    local base = given or credited
    -- a payer without a period re-arms when the condition stops holding: also when that
    -- happened between two calls (a top-up), seen in what was left before this call (Redis
    -- holds the state before the call until flush())
    local before = nil
    if period == '' then
      before = 0
      for _, b in ipairs(all_buckets) do
        if b.unit == u then
          for _, f in ipairs({':a', ':r'}) do
            before = before + (tonumber(redis.call('HGET', KEYS[2], b.id .. f)) or 0)
          end
        end
      end
    end
    local function held(hit) if before == nil then return nil end return hit end
    local function over(l, p) return base > 0 and (base - l) * 100 >= p * base end
    local rearm = period == ''
    if not unlimited then
      for _, p in ipairs(cfg.p or {}) do
        p = int(p, 'threshold percent')
        local key, hit, was = 'p' .. I(p), over(units_left, p), held(before and over(before, p))
        if due(key, hit, was, rearm) then
          mark(key, hit, was, rearm, 'balance.threshold',
            {unit = u, percent = p, left = units_left, base = base,
             used = math.max(base - units_left, 0)})
        end
      end
      for _, a in ipairs(cfg.a or {}) do
        a = int(a, 'threshold amount')
        local key, hit, was = 'a' .. I(a), units_left <= a, held(before and before <= a)
        if due(key, hit, was, rearm) then
          mark(key, hit, was, rearm, 'balance.threshold',
            {unit = u, amount = a, left = units_left, base = base,
             used = math.max(base - units_left, 0)})
        end
      end
    end
  end
  if changed then hset(KEYS[7], 'alerted', cjson.encode({p = period, f = marks})) end
end

-- A debit (event) is all or nothing, and needs no reservation; over a cap it is refused.
if mode == 'debit' then
  local room, at = lim_room()
  if room ~= nil and used > room then
    local res = cjson.encode({status = 'limited', granted = 0, money = 0, units = 0, cost = 0,
                              overrun = 0, short = 0, left = 0, live = live, lim = at})
    op('string', 'SET', KEYS[5], res, 'PX', I(ttl))
    flush()
    return res
  end
end
local function short_of_debit()
  if exact then return money_left() < exact end
  return total_units < used
end
if mode == 'debit' and short_of_debit() and not exact then replenish(used) end
if mode == 'debit' and (short_of_debit() or (#upper > 0 and LV.short(upper, used))) then
  local left = exact and money_left() or total_units
  local res = cjson.encode({status = 'insufficient', granted = 0, money = 0, units = 0, cost = 0,
                            overrun = 0, short = 0, left = left == math.huge and -1 or left,
                            live = live})
  events('insufficient', 0, left == math.huge and -1 or left, 0, 0)
  op('string', 'SET', KEYS[5], res, 'PX', I(ttl))
  flush()
  return res
end

-- 1. Commit the used units against the reservation, in its allocation order; release the rest.
-- With a price, the reservation is released whole and the price is debited after it.
local committed, charged, short, uses = 0, 0, 0, {}
local had_rsv = 0
local raw = hget(KEYS[3], member)
if raw then
  had_rsv = 1
  local r = decode(raw, 'reservation ', member)
  local entries = {}
  for _, e in ipairs(r.a or {}) do
    entries[#entries + 1] = {tostring(e[1]), int(e[2], 'reserved units'), int(e[3], 'reserved amount'),
                             e[4]}
  end
  if r.l then  -- its share `lu` of each cap {field, period, ...}, if still in that period
    local units = int(r.lu, 'limit reservation of ', 0, member)
    for j = 1, #r.l, 2 do
      local st = lim_load(tostring(r.l[j]))
      if st.p == tostring(r.l[j + 1]) then
        st.r = math.max(st.r - units, 0)
        st.w = true
      end
    end
  end
  local rnum = int(r.n or 0, 'reserved rate numerator')
  local rden = int(r.d or 0, 'reserved rate denominator')
  for _, e in ipairs(entries) do
    local bid, units, amount = e[1], e[2], e[3]
    local u = math.min(used - committed, units)
    local spent = u
    if exact then
      spent = 0
    elseif units ~= amount then  -- a money bucket: price the used part at the reserved rate
      if rden == 0 then fail('reservation ' .. member .. ' has money but no rate') end
      spent = u == units and amount or math.min(amount, math.ceil(u * rnum / rden))
    end
    hincr(KEYS[2], bid .. ':r', -amount)
    hincr(KEYS[2], bid .. ':u', spent)
    if not e[4] then hincr(KEYS[2], bid .. ':a', amount - spent) end
    if u > 0 and not exact then
      uses[#uses + 1] = {bid, u, spent}
      if units ~= amount then charged = charged + spent end
    end
    committed = committed + u
  end
  hdel(KEYS[3], member)
  op('zset', 'ZREM', KEYS[4], member)
  live = math.max(live - 1, 0)  -- the member is in the index with its reservation
  -- units released back count again as available for the grant below
  count_units()
end

local overrun = 0
for _, c in ipairs(counters) do
  hincr(KEYS[8], c[1], c[2])
  ctr[c[1]] = I(hnum(KEYS[8], c[1]))
end
if exact then
  -- the price of the usage, exactly, from the money buckets (released reservation included)
  committed = used
  if exact > 0 then
    local got, extra = take_money(exact)
    for _, e in ipairs(extra) do uses[#uses + 1] = e end
    charged = got
    short = exact - got
  end
  count_units()
elseif used > committed then
  -- usage beyond the reservation (or a debit) is taken from what is available now
  local got, extra = take(used - committed, 'u')
  for _, e in ipairs(extra) do
    uses[#uses + 1] = e
    if e[2] ~= e[3] then charged = charged + e[3] end
  end
  overrun = used - committed - got
  committed = committed + got
  count_units()
end
if #upper > 0 then LV.commit(upper, member, used) end

-- The used units count against every cap of the usage.
local hit = {}
if used > 0 then
  for i, c in ipairs(caps) do
    local st = c.s
    st.u = st.u + used
    if st.u >= MAX_INT then fail('limit ' .. c.f .. ' would leave the exact integer range') end
    st.w = true
    if st.n == 0 and st.u >= c.cap then
      st.n = 1
      hit[#hit + 1] = i
      local imsi, scope, name = string.match(c.f, '^([^|]+)|([^|]+)|([^|]+)$')
      emit(KEYS[9], ARGV[14], now, 'sim.limit_reached', c.f .. '|' .. st.p,
        {imsi = imsi, twin = scope ~= '*' and scope or nil},
        {cap = name, limit = c.cap, used = st.u, period = string.sub(st.p, 2), action = c.act,
         twin = scope ~= '*' and scope or nil})
    end
  end
end

-- 2. Reserve a new grant. Fair share: with L live reservations on the payer, a session gets
-- at most available / (L + 1), but never less than the minimum grant (when available); and
-- never more than the enforced caps still allow.
local granted, money = 0, 0
local room, lim = lim_room()
local need = want
if room ~= nil and room < need then need = room end
if need > 0 and mode == 'session' and total_units < need then replenish(need) end
if want > 0 and mode == 'session' then
  local grant = want
  if total_units ~= math.huge and total_units < want * (live + 1) then
    grant = math.max(math.floor(total_units / (live + 1)), min_grant)
    grant = math.min(grant, want, total_units)
  end
  if room ~= nil and room < grant then grant = room end
  if #upper > 0 then grant = math.min(grant, LV.allow(upper, want, min_grant)) end
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
      local held, units = nil, nil
      if ncaps > 0 then  -- flat {field, period, ...}: a JSON of nested lists costs twice
        held, units = {}, I(got)
        for _, c in ipairs(caps) do
          c.s.r = c.s.r + got
          c.s.w = true
          held[#held + 1] = c.f
          held[#held + 1] = c.s.p
        end
      end
      hset(KEYS[3], member, cjson.encode({a = enc, n = I(num), d = I(den), u = unit, t = I(now),
                                          l = held, lu = units}))
      op('zset', 'ZADD', KEYS[4], I(deadline), member)
      live = live + 1
      if #upper > 0 then LV.reserve(upper, member, got, deadline, now, unit) end
    end
  end
end

-- 3. The rated usage record, in the same atomic step as the balance change.
if committed > 0 or overrun > 0 then
  local alloc = {}
  for _, e in ipairs(uses) do alloc[#alloc + 1] = {e[1], I(e[3])} end
  local fields = {'stream', 'XADD', KEYS[6], '*', 'kind', 'usage', 'id', ARGV[1],
    'payer', ARGV[14], 'ts', I(now), 'unit', unit, 'units', I(committed), 'money', I(charged),
    'overrun', I(overrun), 'alloc', cjson.encode(alloc), 'ctx', ARGV[13]}
  if short > 0 then
    fields[#fields + 1] = 'short'
    fields[#fields + 1] = I(short)
  end
  op(unpack(fields))
end
if #upper > 0 then LV.record(upper, ARGV[1], now, unit, ARGV[14]) end

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
  local life = life_fields()
  if not life[5] then
    if life[1] then
      local lad = decode(life[1], 'ladder')
      local tier = int(life[2] or '0', 'tier')
      if lad.u == unit and tier + 1 < #lad.s then left = lad.s[tier + 2] - lad.s[tier + 1] end
    end
    if left == 0 and life[3] then
      local rule = decode(life[3], 'auto top-off rule')
      local n = int(hget(KEYS[7], 'topoffs:' .. (life[4] or '')) or '0', 'top-off count')
      if not rule.off and rule.u == unit and (rule.cap == 0 or n < rule.cap) then
        left = int(rule.units, 'auto top-off units')
      end
    end
  end
end
local lv, own = nil, left == math.huge and -1 or left  -- own: the payer's, for its events
if #upper > 0 then lv, left = LV.results(upper, left) end
if left == math.huge then left = -1 end
local status = 'ok'
room, lim = lim_room()
if room ~= 0 then lim = 0 end
if mode == 'session' and want > 0 and granted == 0 then
  status = lim > 0 and 'limited' or 'exhausted'
end
if mode == 'session' and had_rsv == 0 and used > 0 then status = 'no_reservation' end
local res
if ctr == nil and #hit == 0 and lv == nil then
  -- the common result (no counters, no cap reached, one level) in one format call: the
  -- same JSON as below, without a table and cjson's encoder on every call
  res = string.format('{"status":"%s","granted":"%d","money":"%d","units":"%d","cost":"%d",'
    .. '"overrun":"%d","short":"%d","left":"%d","live":%d,"lim":%d}', status, granted, money,
    committed, charged, overrun, short, left, live, lim)
else
  res = cjson.encode({status = status, granted = I(granted), money = I(money),
                      units = I(committed), cost = I(charged), overrun = I(overrun),
                      short = I(short), left = I(left), live = live, ctr = ctr,
                      lim = lim, hit = #hit > 0 and hit or nil, lv = lv})
end
for f, st in pairs(LIM) do
  if st.w then hset(KEYS[10], f, st.p .. ':' .. I(st.u) .. ':' .. I(st.r) .. ':' .. I(st.n)) end
end
events(status, short, own, committed, charged)
op('string', 'SET', KEYS[5], res, 'PX', I(ttl))
flush()
return res
