-- lifecycle.lua: a payer's period, renewal and renewal fee, each in one atomic step keyed by
-- the period it ends, so that any number of workers running it at once act exactly once.
-- See docs/lifecycle.md.
--
-- THE RULE (see _shadow.lua, prepended): every input is validated and every change computed
-- against a shadow of the keys before the first write; `flush()` (in `reply`) writes them
-- all at the end and nothing that can fail runs after it. An error leaves every key
-- byte-identical.
--
-- KEYS[1] buckets HASH, KEYS[2] balances HASH, KEYS[3] life HASH, KEYS[4] stream,
-- KEYS[5] events STREAM (the payer's outbox: renewal.paid / renewal.unpaid, docs/webhooks.md)
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

SCRIPT = 'lifecycle.lua'
local action = ARGV[1]
local now = int(ARGV[2], 'now')
local tag = ARGV[3]
if tag == nil or tag == '' then fail('payer tag is required') end
local args = decode(ARGV[4] or '', 'arguments')
local ACTIONS = {setup = true, topoff = true, renew = true, pay = true, fail = true}
if not ACTIONS[action] then fail('unknown action ' .. tostring(action)) end
local function reply(t)
  local text = cjson.encode(t)
  flush()
  return text
end
local function has(key, f) return hget(key, f) and true or false end

-- Records are 'adjust' records (the bill run reads purchases from those by context "api").
local function record(id, money, alloc, ctx)
  op('stream', 'XADD', KEYS[4], '*', 'kind', 'adjust', 'id', id, 'payer', tag, 'ts', I(now),
    'units', '0', 'money', I(money), 'alloc', cjson.encode(alloc), 'ctx', cjson.encode(ctx))
end

local function num(field)
  return hnum(KEYS[2], field)
end

-- A period {id, start, end} of the arguments (validated before anything is written).
local function period_arg(p, what)
  if type(p) ~= 'table' or type(p.id) ~= 'string' or p.id == '' then
    fail(what .. ' must be a period {id, start, end}')
  end
  return {id = p.id, start = int(p.start, what .. '.start'), ['end'] = int(p['end'], what .. '.end')}
end

local function start_period(p)
  hset(KEYS[3], 'period', p.id)
  hset(KEYS[3], 'pstart', I(p.start))
  hset(KEYS[3], 'pend', I(p['end']))
end

-- Put every bucket of the payer on hold, or lift the hold. `only`: just these bucket ids.
local function hold_all(on, only)
  local defs = hgetall(KEYS[1])
  for i = 1, #defs, 2 do
    if only == nil or only[defs[i]] then
      local d = decode(defs[i + 1], 'bucket ', defs[i])
      if on then d.hold = true else d.hold = nil end
      hset(KEYS[1], defs[i], cjson.encode(d))
    end
  end
end

-- Mark the bucket the auto top-off in force buys for with its threshold in units (`thr`),
-- unmark every other bucket. charge.lua checks the threshold only on a marked payer.
local function mark_threshold()
  local f = {hget(KEYS[3], 'topoff_api'), hget(KEYS[3], 'topoff'), hget(KEYS[3], 'size'),
             hget(KEYS[3], 'ladder')}
  local raw, thr, target = f[1] or f[2], 0, nil
  if raw then
    local rule = decode(raw, 'auto top-off rule')
    local pct = tonumber(rule.pct or 0) or 0
    if not rule.off and pct > 0 then
      local size = int(f[3] or '0', 'size')
      if f[4] then
        local lad = decode(f[4], 'ladder')
        size = int(lad.s[#lad.s], 'ladder size')
      end
      thr, target = math.floor(size * pct / 100), rule.pool
    end
  end
  local defs = hgetall(KEYS[1])
  for i = 1, #defs, 2 do
    local d = decode(defs[i + 1], 'bucket ', defs[i])
    local want = nil
    if defs[i] == target and thr > 0 then want = thr end
    if tonumber(d.thr) ~= want then
      d.thr = want
      hset(KEYS[1], defs[i], cjson.encode(d))
    end
  end
  return thr
end

if action == 'setup' then
  local size = args.size and int(args.size, 'size') or nil
  local first = not has(KEYS[3], 'period')
  local period = first and period_arg(args.period, 'period') or nil
  if args.ladder then
    local lad = args.ladder
    if type(lad) ~= 'table' or type(lad.s) ~= 'table' or #lad.s == 0 then
      fail('ladder must have sizes (s)')
    end
    for i, v in ipairs(lad.s) do int(v, 'ladder size ', 0, i) end
  end
  for _, name in ipairs({'ladder', 'topoff'}) do
    if args[name] then
      hset(KEYS[3], name, cjson.encode(args[name]))
    else
      hdel(KEYS[3], name)
    end
  end
  if size then hset(KEYS[3], 'size', I(size)) end
  if first then start_period(period) end
  if args.ladder and not has(KEYS[3], 'tier') then hset(KEYS[3], 'tier', '0') end
  if has(KEYS[3], 'hold') and args.own then
    local own = {}
    for _, id in ipairs(args.own) do own[id] = true end
    hold_all(true, own)
  end
  mark_threshold()
  return reply({status = 'ok', period = hget(KEYS[3], 'period')})
end

if action == 'topoff' then
  if type(args.rule) ~= 'table' then fail('rule must be an object') end
  hset(KEYS[3], 'topoff_api', cjson.encode(args.rule))
  return reply({status = 'ok', threshold = mark_threshold()})
end

local current = hget(KEYS[3], 'period')

if action == 'pay' then
  if type(args.ref) ~= 'string' or args.ref == '' then fail('ref must be a string') end
  local marker = 'paid:' .. args.ref
  if has(KEYS[3], marker) then
    return reply({status = 'paid', replay = true})
  end
  local fee = int(args.fee, 'fee')
  local defs = hgetall(KEYS[1])
  local order, total = {}, 0
  for i = 1, #defs, 2 do
    local d = decode(defs[i + 1], 'bucket ', defs[i])
    local to = int(d.to or 0, 'valid_to of ', 0, defs[i])
    if d.unit == 'money' and not d.unlimited and not d.hold
        and int(d.from or 0, 'valid_from of ', 0, defs[i]) <= now and (to == 0 or now < to) then
      local a = num(defs[i] .. ':a')
      order[#order + 1] = {id = defs[i], prio = int(d.prio or 0, 'prio', -MAX_INT + 1), a = a}
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
      hincr(KEYS[2], b.id .. ':a', -take)
      hincr(KEYS[2], b.id .. ':i', -take)
      alloc[#alloc + 1] = {b.id, I(-take)}
      left = left - take
    end
  end
  hset(KEYS[3], marker, I(now))
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
  local defs = hgetall(KEYS[1])
  local alloc, ids = {}, {}
  for i = 1, #defs, 2 do
    local d = decode(defs[i + 1], 'bucket ', defs[i])
    local to = int(d.to or 0, 'valid_to of ', 0, defs[i])
    local bid = defs[i]
    if to ~= 0 and to <= now and num(bid .. ':r') == 0 then
      local a = num(bid .. ':a')
      hdel(KEYS[1], bid)
      for _, f in ipairs({':a', ':r', ':u', ':i', ':x'}) do hdel(KEYS[2], bid .. f) end
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
  if credit ~= nil then
    if type(credit) ~= 'table' or type(credit.bucket) ~= 'string' then
      fail('credit must be {bucket, size}')
    end
    int(credit.size, 'credit.size')
  end
  if args.due == 'depleted' then
    if credit == nil or num(credit.bucket .. ':a') > 0 then
      return reply({status = 'not_due', period = current})
    end
  elseif now < int(hget(KEYS[3], 'pend') or '0', 'pend') then
    return reply({status = 'not_due', period = current})
  end
  local next_period = period_arg(args.next, 'next')
  local alloc = {}
  if credit then
    local a = num(credit.bucket .. ':a')
    local r = num(credit.bucket .. ':r')
    local delta = math.max(tonumber(credit.size) - a - r, -a)
    if delta ~= 0 then
      hincr(KEYS[2], credit.bucket .. ':a', delta)
      hincr(KEYS[2], credit.bucket .. ':i', delta)
      -- lifecycle credits, apart from the catalogue size a re-apply resizes to
      hincr(KEYS[2], credit.bucket .. ':x', delta)
    end
    alloc[1] = {credit.bucket, I(delta)}
    if has(KEYS[3], 'ladder') then
      hset(KEYS[3], 'tier', '0')
    end
  end
  local lifted = has(KEYS[3], 'hold')
  if lifted then
    hold_all(false)
    hdel(KEYS[3], 'hold')
  end
  purge_expired()
  start_period(next_period)
  if credit then
    local unpaid = args.fallback == 'unpaid'
    emit(KEYS[5], tag, now, unpaid and 'renewal.unpaid' or 'renewal.paid', current, nil,
      {pool = args.pool, account = args.account, period = args.next.id, ended = current,
       fee = int(args.fee or 0, 'fee'), currency = args.currency, billed = args.billed,
       due = args.due, outcome = unpaid and 'renewed_unpaid' or 'renewed',
       units = int(credit.size, 'credit.size')})
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
  local next_period = nil
  if args.on_failure ~= 'suspend' and args.due ~= 'depleted' then
    next_period = period_arg(args.next, 'next')
  end
  local first = not has(KEYS[3], 'failed:' .. current)
  if first then
    hset(KEYS[3], 'failed:' .. current, I(now))
    emit(KEYS[5], tag, now, 'renewal.unpaid', current, nil,
      {pool = args.pool, account = args.account, period = current,
       fee = int(args.fee or 0, 'fee'), currency = args.currency, due = args.due,
       outcome = args.on_failure == 'suspend' and 'suspended' or 'overage'})
  end
  if args.on_failure == 'suspend' then
    local held = not has(KEYS[3], 'hold')
    if held then
      hold_all(true)
      hset(KEYS[3], 'hold', current)
    end
    return reply({status = 'suspended', period = current, first = first, held = held})
  end
  if args.due == 'depleted' then
    -- used up before its end: the period goes on without a new allowance (retried each pass)
    return reply({status = 'overage', period = current, first = first})
  end
  start_period(next_period)
  return reply({status = 'overage', period = next_period.id, first = first})
end

fail('unknown action ' .. tostring(action))
