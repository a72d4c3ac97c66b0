-- _events.lua: prepended to every balance script after _shadow.lua (see
-- ocs.balance.store.script_text). `emit` appends one event to the payer's outbox stream
-- (`ocs:{tenant:kind:id}:events`, ocs.balance.keys.PayerKeys.events), in the same atomic
-- step as the change that causes it; the webhook dispatcher (ocs.events) delivers it.
-- docs/webhooks.md has the event types and their data.
--
-- An event is a WRITE: `emit` only records it (through `op`), `flush()` sends it with the
-- script's other writes. So call it after all validation, like any other write, and pass
-- the outbox key in KEYS (the script names every key it touches; same hash tag).
--
--   emit(outbox_key, tag, now_ms, type, natural_key, subject, data)
--     tag          the payer tag "tenant:kind:id" (gives the event's tenant and payer)
--     type         e.g. 'balance.threshold' (docs/webhooks.md lists them)
--     natural_key  what makes this event unique for the payer, built from inputs that are
--                  the same on a replay (a request id, a period, a threshold): the event id
--                  is "evt_" .. sha1(tag | type | natural_key), so the same cause always
--                  gives the same id and a receiver can deduplicate by it
--     subject      table of extra subject fields ({imsi = ...}) or nil; payer and
--                  payer_kind are added
--     data         flat table: string values, integer numbers (written exactly, beyond
--                  cjson's 14 digits), booleans, or nested tables (cjson)
-- Fails (before any write) if the tag is not tenant:kind:id or a number is not an integer.

local function event_json(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local text
    if type(v) == 'number' then
      text = I(int(v, 'event field ', -MAX_INT + 1, k))
    else
      text = cjson.encode(v)
    end
    parts[#parts + 1] = cjson.encode(tostring(k)) .. ':' .. text
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function emit(outbox_key, tag, now_ms, etype, natural_key, subject, data)
  local tenant, kind, pid = string.match(tag or '', '^([^:]+):([^:]+):(.+)$')
  if not tenant then fail('payer tag ' .. tostring(tag) .. ' is not tenant:kind:id') end
  local subj = {}
  for k, v in pairs(subject or {}) do subj[k] = v end
  subj.payer, subj.payer_kind = pid, kind
  op('stream', 'XADD', outbox_key, '*',
    'id', 'evt_' .. string.sub(redis.sha1hex(tag .. '|' .. etype .. '|' .. natural_key), 1, 32),
    'tenant', tenant, 'type', etype, 'subject', event_json(subj),
    'time', I(int(now_ms, 'event time')), 'data', event_json(data or {}))
end

