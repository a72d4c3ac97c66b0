-- _levels.lua: the upper levels of a multi-level (B2B2B) usage. Prepended to charge.lua after
-- _shadow.lua (ocs.balance.store.script_text); docs/charging.md, "Multi-level reservations".
--
-- Level 0 is the SIM's payer: charge.lua's KEYS[1..10]. Each upper level i (1, 2, ...: the
-- reseller, its reseller, ...) brings five keys, KEYS[10 + 5(i-1) + 1 .. 5]: buckets, balances,
-- rsv, rsvidx, stream (the same shapes as level 0's), all in the slot of the chain's root
-- (ocs.balance.keys), and one entry of ARGV[18], a JSON list, level 1 first:
--   {p = payer tag, k = "reserve" | "check", n = rate numerator, d = rate denominator,
--    x = the exact money of the used units at this level (a wallet), absent otherwise,
--    l = the level's number (absent: its place in the list)}
-- "reserve" (prepaid pool, wallet): a grant holds its share at this level too, under the
-- same reservation member, with the same reclaim deadline; a commit releases it and takes
-- what was used (the price, for a wallet). "check" (postpaid pool, external contract):
-- nothing is held; the grant is capped by what the level can still cover (its credit limit)
-- and the reported usage is taken when it comes. The grant is the smallest any level allows.
-- Each level that moved writes a `level` record (id "<request id>#<i>") to its own stream.
-- A level whose payer has no bucket of the usage's unit (nor money at a rate: a data pool
-- and an SMS) is passed over: its payer does not pay this service online.
--
-- Every function keeps THE RULE of _shadow.lua: reads go through the shadow, writes are
-- recorded and flushed by the caller; a `fail` here comes before any write.

local LV = {BASE = 10}  -- the keys of level 0 (charge.lua's own)

-- The functions below are made by LV.load for a usage with upper levels only: Redis runs
-- the whole script text at every call, and a function defined at the top level is a new
-- closure each time, which a single-level payer (the common case) would pay for nothing.
-- charge.lua calls them only when LV.load returned levels.
local function lv_define()
  local function lv_sorted(order)
    table.sort(order, function(a, b)
      if a.prio ~= b.prio then return a.prio < b.prio end
      local ta = a.to == 0 and math.huge or a.to
      local tb = b.to == 0 and math.huge or b.to
      if ta ~= tb then return ta < tb end
      return a.id < b.id
    end)
    return order
  end

  -- The level's usable buckets in consumption order (as charge.lua's level 0).
  function LV.order(L, unit, now)
    local defs = hgetall(L.kb)
    local order = {}
    for j = 1, #defs, 2 do
      local d = decode(defs[j + 1], 'bucket ', defs[j])
      local to = int(d.to or 0, 'valid_to of ', 0, defs[j])
      local from = int(d.from or 0, 'valid_from of ', 0, defs[j])
      local money = d.unit == 'money'
      if d.unit == unit or (money and L.den > 0) then L.concerned = true end
      if ((d.unit == unit and not L.exact) or (money and L.den > 0)) and from <= now
          and (to == 0 or now < to) and not d.hold then
        order[#order + 1] = {id = defs[j], prio = int(d.prio or 0, 'prio of ', -MAX_INT + 1, defs[j]),
                             to = to, money = money, unlimited = d.unlimited and true or false}
      end
    end
    L.order = lv_sorted(order)
  end

  function LV.capacity(L, b)
    if b.unlimited then return math.huge end
    local a = hnum(L.kv, b.id .. ':a')
    if b.money then
      if L.num == 0 then return math.huge end
      return math.floor(a * L.den / L.num)
    end
    return a
  end

  function LV.total(L)
    local t = 0
    for _, b in ipairs(L.order) do t = t + math.max(LV.capacity(L, b), 0) end
    return t
  end

  function LV.money_left(L)
    local m = 0
    for _, b in ipairs(L.order) do
      if b.money then
        if b.unlimited then return math.huge end
        m = m + math.max(hnum(L.kv, b.id .. ':a'), 0)
      end
    end
    return m
  end

  -- Take `need` units ('r' reserve, 'u' use); the units taken and {{bid, units, amount}}.
  function LV.take(L, need, field)
    local got, alloc = 0, {}
    for _, b in ipairs(L.order) do
      if need - got <= 0 then break end
      local u = math.min(need - got, LV.capacity(L, b))
      if u > 0 then
        local amount = u
        if b.money then amount = math.ceil(u * L.num / L.den) end
        if not b.unlimited then hincr(L.kv, b.id .. ':a', -amount) end
        hincr(L.kv, b.id .. ':' .. field, amount)
        alloc[#alloc + 1] = {b.id, u, amount, b.unlimited or nil}
        got = got + u
      end
    end
    return got, alloc
  end

  function LV.take_money(L, amount)
    local got, alloc = 0, {}
    for _, b in ipairs(L.order) do
      if amount - got <= 0 then break end
      if b.money then
        local m = amount - got
        if not b.unlimited then m = math.min(m, math.max(hnum(L.kv, b.id .. ':a'), 0)) end
        if m > 0 then
          if not b.unlimited then hincr(L.kv, b.id .. ':a', -m) end
          hincr(L.kv, b.id .. ':u', m)
          alloc[#alloc + 1] = {b.id, 0, m}
          got = got + m
        end
      end
    end
    return got, alloc
  end

  -- A debit (event) is all or nothing at every level: true when one cannot cover it.
  function LV.short(levels, used)
    for _, L in ipairs(levels) do
      if L.exact then
        if LV.money_left(L) < L.exact then return true end
      elseif LV.total(L) < used then
        return true
      end
    end
    return false
  end

  -- Release each level's reservation of `member` and take the `used` units (a wallet: its
  -- exact price); what a level cannot cover is its overrun (units) or short (money).
  function LV.commit(levels, member, used)
    for _, L in ipairs(levels) do
      local raw = hget(L.kr, member)
      if raw then
        local r = decode(raw, 'reservation ', member)
        for _, e in ipairs(r.a or {}) do
          local amount = int(e[3], 'reserved amount of ', 0, member)
          hincr(L.kv, tostring(e[1]) .. ':r', -amount)
          if not e[4] then hincr(L.kv, tostring(e[1]) .. ':a', amount) end
        end
        hdel(L.kr, member)
        op('zset', 'ZREM', L.ki, member)
        L.held = true
      end
      if L.exact then
        L.units = used
        if L.exact > 0 then
          local got, alloc = LV.take_money(L, L.exact)
          L.uses, L.money, L.short = alloc, got, L.exact - got
        end
      elseif used > 0 then
        local got, alloc = LV.take(L, used, 'u')
        L.uses, L.units, L.overrun = alloc, got, used - got
        for _, e in ipairs(alloc) do
          if e[2] ~= e[3] then L.money = L.money + e[3] end
        end
      end
    end
  end

  -- The most any level lets a grant of `want` be: a reserved level its fair share (as level
  -- 0: at most available / (live + 1), at least the minimum grant when available), a checked
  -- level what it can still cover.
  function LV.allow(levels, want, min_grant)
    local grant = want
    for _, L in ipairs(levels) do
      local total = LV.total(L)
      local g = want
      if total ~= math.huge then
        if L.reserve then
          local live = L.live - (L.held and 1 or 0)
          if total < want * (live + 1) then
            g = math.min(math.max(math.floor(total / (live + 1)), min_grant), want, total)
          end
        else
          g = math.min(want, total)
        end
      end
      grant = math.min(grant, math.max(g, 0))
    end
    return grant
  end

  -- Hold `units` (what level 0 granted; every level allowed it) at every reserved level.
  function LV.reserve(levels, member, units, deadline, now, unit)
    for _, L in ipairs(levels) do
      if L.reserve then
        local got, alloc = LV.take(L, units, 'r')
        if got < units then fail('level ' .. L.i .. ' cannot hold ' .. I(units) .. ' units') end
        local enc = {}
        for _, e in ipairs(alloc) do enc[#enc + 1] = {e[1], I(e[2]), I(e[3]), e[4]} end
        hset(L.kr, member, cjson.encode({a = enc, n = I(L.num), d = I(L.den), u = unit, t = I(now)}))
        op('zset', 'ZADD', L.ki, I(deadline), member)
      end
    end
  end

  -- Its context is short: the level and the level-0 payer; the usage record of the same
  -- request id (level 0's stream) has the rest, every level's priced line included.
  function LV.record(levels, id, now, unit, payer0)
    for _, L in ipairs(levels) do
      if L.units > 0 or L.overrun > 0 or L.money > 0 then
        local ctx = cjson.encode({level = L.i, usage = id, of = payer0})
        local alloc = {}
        for _, e in ipairs(L.uses) do alloc[#alloc + 1] = {e[1], I(e[3])} end
        local f = {'stream', 'XADD', L.ks, '*', 'kind', 'level', 'id', id .. '#' .. L.i,
          'payer', L.tag, 'ts', I(now), 'unit', unit, 'units', I(L.units), 'money', I(L.money),
          'overrun', I(L.overrun), 'alloc', cjson.encode(alloc), 'ctx', ctx}
        if L.short > 0 then
          f[#f + 1] = 'short'
          f[#f + 1] = I(L.short)
        end
        op(unpack(f))
      end
    end
  end

  -- What every level still has (-1: unlimited), and the smallest of them with level 0's.
  function LV.results(levels, left)
    local out = {}
    for _, L in ipairs(levels) do
      local t = LV.total(L)
      if t ~= math.huge and (left == math.huge or t < left) then left = t end
      out[#out + 1] = {level = L.i, units = I(L.units), money = I(L.money),
                       overrun = I(L.overrun), short = I(L.short),
                       left = t == math.huge and -1 or I(t)}
    end
    return out, left
  end
end

function LV.load(text, unit, now)
  local levels = {}
  if text == nil or text == '' then return levels end
  if LV.take == nil then lv_define() end
  for i, s in ipairs(decode(text, 'levels')) do
    local k = LV.BASE + 5 * (i - 1)
    if type(s) ~= 'table' or type(s.p) ~= 'string' or s.p == '' then
      fail('level ' .. i .. ' has no payer')
    end
    if KEYS[k + 5] == nil then fail('level ' .. i .. ' has no keys') end
    if s.k ~= 'reserve' and s.k ~= 'check' then fail('level ' .. i .. ': k must be reserve or check') end
    local L = {i = s.l and int(s.l, 'level number', 1) or i, tag = s.p, reserve = s.k == 'reserve', num = int(s.n, 'level rate numerator'),
               den = int(s.d, 'level rate denominator'), kb = KEYS[k + 1], kv = KEYS[k + 2],
               kr = KEYS[k + 3], ki = KEYS[k + 4], ks = KEYS[k + 5], uses = {}, units = 0,
               money = 0, overrun = 0, short = 0, held = false}
    if s.x ~= nil then L.exact = int(s.x, 'level price') end
    if L.exact and L.den == 0 then fail('level ' .. i .. ': a price needs money buckets') end
    LV.order(L, unit, now)
    if L.concerned then  -- a level whose payer holds nothing of this unit is passed over
      L.live = redis.call('ZCARD', L.ki)
      TYPED[L.ki] = true
      levels[#levels + 1] = L
    end
  end
  return levels
end
