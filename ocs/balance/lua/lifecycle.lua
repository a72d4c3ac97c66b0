-- lifecycle.lua: a payer's period, renewal and renewal fee, each in one atomic step keyed by
-- the period it ends, so that any number of workers running it at once act exactly once.
-- See docs/lifecycle.md.
--
-- KEYS[1] buckets HASH, KEYS[2] balances HASH, KEYS[3] life HASH, KEYS[4] stream
--   life: period, pstart, pend (ms)   the current period; tier (adaptive)
--         ladder, topoff (JSON)       rules charge.lua reads when the payer runs short
--         topoff_api (JSON)           the HTTP API's auto top-off setting (overrides topoff)
--         size                        the pool's allowance (base of threshold_percent)
--         topoffs:<period>            auto top-offs bought in that period
--         hold                        the period whose unpaid renewal suspended the payer
--         failed:<period>, paid:<ref> markers (first failure notice, renewal fee paid)
-- ARGV[1] action: setup | topoff | renew | pay | fail
-- ARGV[2] now (ms), ARGV[3] payer tag, ARGV[4] JSON arguments of the action
-- Returns JSON {status, ...}.
--
-- setup {ladder?, topoff?, size, own, period={id, start, end}}: store the rules (absent:
--   removed); start the first period and tier 0 unless the payer has them already; put a
--   suspended payer's `own` buckets (those a catalogue apply rewrites) back on hold.
-- topoff {rule}: store the API's auto top-off setting (rule {off=true}: none).
--   setup and topoff both mark the pool's bucket with the threshold of the auto top-off in
--   force ("thr" in its definition, units: pct of the allowance, of the top tier for an
--   adaptive pool), which charge.lua reads with the definitions it loads anyway.
-- renew {period, next={id, start, end}, due="end"|"depleted", credit?={bucket, size},
--   fee, currency, billed="invoice"|"wallet"|"none", pool, account, fallback?}:
--   if `period` is still current and due, set the bucket's available to `size` minus what
--   is reserved (no rollover; tier 0 for an adaptive pool), lift a hold (`lifted`), remove
--   expired buckets without reservations (record "expire"), start `next`, and
--   write the renewal record (context "period": the period the fee pays for, "ended": the
--   one that ended). Otherwise "already" / "not_due". Only the call that renewed answers
--   "renewed"/"rolled": the caller signals the pool's sessions (RAR) from that answer.
-- pay {ref, fee, currency, pool, account, period}: debit the fee from this payer's money
--   buckets once per `ref` ("insufficient" when they cannot cover it).
-- fail {period, next, due, on_failure="suspend"|"overage"}: suspend puts every bucket on hold
--   (the next pass retries); overage starts `next` without a new allowance (due "end") or
--   goes on in the period without one (due "depleted", retried each pass). `first` tells
--   whether this is the first failure of the period (the caller notifies once), `held`
--   whether this call put the hold on (the caller aborts the pool's sessions once).

local action = ARGV[1]
local now = tonumber(ARGV[2])
local tag = ARGV[3]
local args = cjson.decode(ARGV[4])
local function I(n) return string.format('%d', n) end
local function reply(t) return cjson.encode(t) end

-- Records are 'adjust' records (the bill run reads purchases from those by context "api").
local function record(id, money, alloc, ctx)
  redis.call('XADD', KEYS[4], '*', 'kind', 'adjust', 'id', id, 'payer', tag, 'ts', I(now),
    'units', '0', 'money', I(money), 'alloc', cjson.encode(alloc), 'ctx', cjson.encode(ctx))
end

local function num(field)
  return tonumber(redis.call('HGET', KEYS[2], field) or '0')
end

local function start_period(p)
  redis.call('HSET', KEYS[3], 'period', p.id, 'pstart', I(p.start), 'pend', I(p['end']))
end

-- Put every bucket of the payer on hold, or lift the hold. `only`: just these bucket ids.
local function hold_all(on, only)
  local defs = redis.call('HGETALL', KEYS[1])
  for i = 1, #defs, 2 do
    if only == nil or only[defs[i]] then
      local d = cjson.decode(defs[i + 1])
      if on then d.hold = true else d.hold = nil end
      redis.call('HSET', KEYS[1], defs[i], cjson.encode(d))
    end
  end
end

-- Mark the bucket the auto top-off in force buys for with its threshold in units (`thr`),
-- unmark every other bucket. charge.lua checks the threshold only on a marked payer.
local function mark_threshold()
  local f = redis.call('HMGET', KEYS[3], 'topoff_api', 'topoff', 'size', 'ladder')
  local raw, thr, target = f[1] or f[2], 0, nil
  if raw then
    local rule = cjson.decode(raw)
    local pct = tonumber(rule.pct or 0) or 0
    if not rule.off and pct > 0 then
      local size = tonumber(f[3] or '0')
      if f[4] then
        local lad = cjson.decode(f[4])
        size = tonumber(lad.s[#lad.s])
      end
      thr, target = math.floor(size * pct / 100), rule.pool
    end
  end
  local defs = redis.call('HGETALL', KEYS[1])
  for i = 1, #defs, 2 do
    local d = cjson.decode(defs[i + 1])
    local want = nil
    if defs[i] == target and thr > 0 then want = thr end
    if tonumber(d.thr) ~= want then
      d.thr = want
      redis.call('HSET', KEYS[1], defs[i], cjson.encode(d))
    end
  end
  return thr
end

if action == 'setup' then
  for _, name in ipairs({'ladder', 'topoff'}) do
    if args[name] then
      redis.call('HSET', KEYS[3], name, cjson.encode(args[name]))
    else
      redis.call('HDEL', KEYS[3], name)
    end
  end
  if args.size then redis.call('HSET', KEYS[3], 'size', I(args.size)) end
  if redis.call('HEXISTS', KEYS[3], 'period') == 0 then start_period(args.period) end
  if args.ladder then redis.call('HSETNX', KEYS[3], 'tier', '0') end
  if redis.call('HEXISTS', KEYS[3], 'hold') == 1 and args.own then
    local own = {}
    for _, id in ipairs(args.own) do own[id] = true end
    hold_all(true, own)
  end
  mark_threshold()
  return reply({status = 'ok', period = redis.call('HGET', KEYS[3], 'period')})
end

if action == 'topoff' then
  redis.call('HSET', KEYS[3], 'topoff_api', cjson.encode(args.rule))
  return reply({status = 'ok', threshold = mark_threshold()})
end

local current = redis.call('HGET', KEYS[3], 'period')

if action == 'pay' then
  local marker = 'paid:' .. args.ref
  if redis.call('HEXISTS', KEYS[3], marker) == 1 then
    return reply({status = 'paid', replay = true})
  end
  local fee = tonumber(args.fee)
  local defs = redis.call('HGETALL', KEYS[1])
  local order, total = {}, 0
  for i = 1, #defs, 2 do
    local d = cjson.decode(defs[i + 1])
    local to = tonumber(d.to or 0)
    if d.unit == 'money' and not d.unlimited and not d.hold
        and tonumber(d.from or 0) <= now and (to == 0 or now < to) then
      local a = num(defs[i] .. ':a')
      order[#order + 1] = {id = defs[i], prio = tonumber(d.prio or 0), a = a}
      total = total + math.max(a, 0)
    end
  end
  if total < fee then return reply({status = 'insufficient', available = I(total)}) end
  table.sort(order, function(x, y)
    if x.prio ~= y.prio then return x.prio < y.prio end
    return x.id < y.id
  end)
  local left, alloc = fee, {}
  for _, b in ipairs(order) do
    local take = math.min(left, math.max(b.a, 0))
    if take > 0 then
      -- a negative credit, like an adjust record: the wallet view shows -fee
      redis.call('HINCRBY', KEYS[2], b.id .. ':a', -take)
      redis.call('HINCRBY', KEYS[2], b.id .. ':i', -take)
      alloc[#alloc + 1] = {b.id, I(-take)}
      left = left - take
    end
  end
  redis.call('HSET', KEYS[3], marker, I(now))
  record('renewal-fee:' .. args.ref, fee, alloc,
    {api = 'renewal-fee', pool = args.pool, account = args.account, price = fee,
     currency = args.currency, period = args.period})
  return reply({status = 'paid', replay = false})
end

if current ~= args.period then
  return reply({status = 'already', period = current})
end

-- Remove buckets that expired (valid_to passed) and hold no reservation: bought top-offs
-- would otherwise pile up, and charge.lua reads every definition on each call. What they
-- still had is forfeited, in one record.
local function purge_expired()
  local defs = redis.call('HGETALL', KEYS[1])
  local alloc, ids = {}, {}
  for i = 1, #defs, 2 do
    local d = cjson.decode(defs[i + 1])
    local to = tonumber(d.to or 0)
    local bid = defs[i]
    if to ~= 0 and to <= now and num(bid .. ':r') == 0 then
      local a = num(bid .. ':a')
      redis.call('HDEL', KEYS[1], bid)
      redis.call('HDEL', KEYS[2], bid .. ':a', bid .. ':r', bid .. ':u', bid .. ':i', bid .. ':x')
      alloc[#alloc + 1] = {bid, I(-a)}
      ids[#ids + 1] = bid
    end
  end
  if #ids > 0 then
    record('expire:' .. tag .. ':' .. current, 0, alloc, {api = 'expire', buckets = ids,
      pool = args.pool, account = args.account, period = current})
  end
end

if action == 'renew' then
  local credit = args.credit
  if args.due == 'depleted' then
    if credit == nil or num(credit.bucket .. ':a') > 0 then
      return reply({status = 'not_due', period = current})
    end
  elseif now < tonumber(redis.call('HGET', KEYS[3], 'pend') or '0') then
    return reply({status = 'not_due', period = current})
  end
  local alloc = {}
  if credit then
    local a = num(credit.bucket .. ':a')
    local r = num(credit.bucket .. ':r')
    local delta = math.max(tonumber(credit.size) - a - r, -a)
    if delta ~= 0 then
      redis.call('HINCRBY', KEYS[2], credit.bucket .. ':a', delta)
      redis.call('HINCRBY', KEYS[2], credit.bucket .. ':i', delta)
      -- lifecycle credits, apart from the catalogue size a re-apply resizes to
      redis.call('HINCRBY', KEYS[2], credit.bucket .. ':x', delta)
    end
    alloc[1] = {credit.bucket, I(delta)}
    if redis.call('HEXISTS', KEYS[3], 'ladder') == 1 then
      redis.call('HSET', KEYS[3], 'tier', '0')
    end
  end
  local lifted = redis.call('HEXISTS', KEYS[3], 'hold') == 1
  if lifted then
    hold_all(false)
    redis.call('HDEL', KEYS[3], 'hold')
  end
  purge_expired()
  start_period(args.next)
  if credit then
    -- "renewal" is a purchase the invoice charges; one paid from a wallet is not
    record('renewal:' .. tag .. ':' .. current, 0, alloc,
      {api = args.billed == 'invoice' and 'renewal' or 'renewal-paid', pool = args.pool, account = args.account, price = args.fee,
       currency = args.currency, billed = args.billed, period = args.next.id,
       ended = current, due = args.due, fallback = args.fallback})
  end
  return reply({status = credit and 'renewed' or 'rolled', period = args.next.id,
                lifted = lifted})
end

if action == 'fail' then
  local first = redis.call('HSETNX', KEYS[3], 'failed:' .. current, I(now)) == 1
  if args.on_failure == 'suspend' then
    local held = redis.call('HEXISTS', KEYS[3], 'hold') == 0
    if held then
      hold_all(true)
      redis.call('HSET', KEYS[3], 'hold', current)
    end
    return reply({status = 'suspended', period = current, first = first, held = held})
  end
  if args.due == 'depleted' then
    -- used up before its end: the period goes on without a new allowance (retried each pass)
    return reply({status = 'overage', period = current, first = first})
  end
  start_period(args.next)
  return reply({status = 'overage', period = args.next.id, first = first})
end

return redis.error_reply('lifecycle.lua: unknown action ' .. tostring(action))
