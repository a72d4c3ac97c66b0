-- _shadow.lua: prepended to every balance script by ocs.balance.store.script_text (Redis runs
-- one text per script; there is no `require`). It holds the rule every script keeps:
--
--   A script validates its inputs and computes every change BEFORE its first write, and no
--   operation that can fail comes after a write.
--
-- Redis does not roll back what a script wrote before an error, so a script that fails
-- half-way loses or duplicates money. Here every read goes through a shadow of the writes
-- made so far (H: hash fields, Z: sorted-set cardinality changes), every write is recorded
-- (hset, hdel, hincr, op) instead of sent, and `flush()` sends them all at the very end,
-- once the result is known. Before flushing it checks the type of every key it is about
-- to write that no read has proved (but one, written first), so the flush itself cannot
-- meet WRONGTYPE after a write.
-- Numbers written are formatted as integers (`I`), never as Lua doubles ("-0", "1e+15").

local function I(n) return string.format('%d', n) end

local SCRIPT = '?'
local function fail(msg)
  error({err = 'ERR ' .. SCRIPT .. ': ' .. msg})
end

local MAX_INT = 9007199254740992  -- 2^53: Lua numbers are doubles, exact below it

-- An integer in [lo, 2^53) from a string or number (lo defaults to 0), else fail. The
-- message is `what .. a .. b`, joined only on failure (the common path builds no string).
local function int(v, what, lo, a, b)
  local n = tonumber(v)
  -- `n % 1 == 0` is false for NaN and the infinities too; no function call on the way
  if n and n % 1 == 0 and n >= (lo or 0) and n < MAX_INT and n > -MAX_INT then return n end
  lo = lo or 0
  fail(what .. (a or '') .. (b or '') .. ' is not an integer >= ' .. I(lo) .. ': '
    .. tostring(v))
end

local H, HK, OPS, TYPED, WANT = {}, {}, {}, {}, {}
-- HN: key -> field -> the integer `hnum` read or `hincr` wrote in this call. A script is the
-- only writer of its keys while it runs and every write goes through `hset`, which keeps
-- HN right, so a field is read from Redis and checked once per call.
local HN = {}

local function hget(key, f)
  local p = H[key]
  if p ~= nil then
    local v = p[f]
    if v ~= nil then  -- false: deleted in this call
      if v and type(v) == 'number' then return I(v) end  -- hincr's, not yet formatted
      return v
    end
  end
  local v = redis.call('HGET', key, f)
  TYPED[key] = true
  return v
end

local function hgetall(key)
  local raw = redis.call('HGETALL', key)
  TYPED[key] = true
  local p = H[key]
  if p == nil then return raw end
  local out, seen = {}, {}
  for i = 1, #raw, 2 do
    local f = raw[i]
    seen[f] = true
    local v = p[f]
    if v == nil then v = raw[i + 1] elseif v and type(v) == 'number' then v = I(v) end
    if v then
      out[#out + 1] = f
      out[#out + 1] = v
    end
  end
  for f, v in pairs(p) do
    if v and not seen[f] then
      out[#out + 1] = f
      out[#out + 1] = type(v) == 'number' and I(v) or v
    end
  end
  return out
end

local function hset(key, f, v)
  local p = H[key]
  if p == nil then
    p = {}
    H[key] = p
    HK[#HK + 1] = key
  end
  WANT[key] = 'hash'
  p[f] = v
  local c = HN[key]
  if c ~= nil then c[f] = nil end
end

local function hdel(key, f) hset(key, f, false) end

-- An integer field of a hash (0 when absent); a field that is not an integer fails.
local function hnum(key, f)
  local c = HN[key]
  if c == nil then
    c = {}
    HN[key] = c
  else
    local n = c[f]
    if n ~= nil then return n end
  end
  local v = hget(key, f)
  local n = 0
  if v then n = int(v, key, -MAX_INT + 1, ' ', f) end
  c[f] = n
  return n
end

-- The new value is kept as a number (checked here to be an exact integer) and formatted
-- once, by flush(): a field moved several times in one call (released, then reserved
-- again) is formatted once.
local function hincr(key, f, d)
  if d == 0 then return end
  local n = hnum(key, f) + d
  if n >= MAX_INT or n <= -MAX_INT or n % 1 ~= 0 then
    fail(key .. ' ' .. f .. ' would leave the exact integer range')
  end
  hset(key, f, n)
  HN[key][f] = n  -- after hset, which forgets it
end

-- Any other write (ZADD, ZREM, XADD, SET, DEL ...) on `key`, whose type must be `kind`.
local function op(kind, ...)
  local args = {...}
  WANT[args[2]] = kind
  OPS[#OPS + 1] = args
end

local function flush()
  -- Keys written but never read (typically the stream): every one but the first is checked
  -- with TYPE; the first one's writes go out before any other write, so if its type is
  -- wrong the error still comes before the first write.
  local first = nil
  for key, kind in pairs(WANT) do
    if not TYPED[key] then
      if first == nil and kind ~= 'hash' then
        first = key
      else
        local t = redis.call('TYPE', key)
        t = type(t) == 'table' and t.ok or t
        if t ~= 'none' and t ~= kind then fail(key .. ' holds a ' .. t .. ', not a ' .. kind) end
      end
    end
  end
  if first ~= nil then
    for _, args in ipairs(OPS) do
      if args[2] == first then redis.call(unpack(args)) end
    end
  end
  -- nothing below can fail: every key has its type and every value is an integer string
  for _, key in ipairs(HK) do
    local sets, dels = {}, {}
    for f, v in pairs(H[key]) do
      if v then
        sets[#sets + 1] = f
        sets[#sets + 1] = type(v) == 'number' and I(v) or v  -- hincr's, checked there
        if #sets >= 1000 then
          redis.call('HSET', key, unpack(sets))
          sets = {}
        end
      else
        dels[#dels + 1] = f
        if #dels >= 1000 then
          redis.call('HDEL', key, unpack(dels))
          dels = {}
        end
      end
    end
    if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
    if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  end
  for _, args in ipairs(OPS) do
    if args[2] ~= first then redis.call(unpack(args)) end
  end
end

local function decode(text, what, a)
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= 'table' then fail(what .. (a or '') .. ' is not valid JSON') end
  return value
end

