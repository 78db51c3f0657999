#!lua
-- Route a batch of ONE sender's outbox entries (the trusted router's only write path; swarm/bus/router.py).
-- The shebang makes Redis refuse the whole script when over maxmemory, before any write:
-- scripts have no rollback, so a write failing half-way must not happen.
-- KEYS[1] outbox  KEYS[2] breaker hash of the sender  KEYS[3] receipts of the sender  KEYS[4] refused
--   then for each topic of the table: its log stream and one key per subscriber inbox,
--   then one dedup mark per routed item, in item order
-- ARGV[1] sender  ARGV[2] router group  ARGV[3] receipts_max_len  ARGV[4] refused_max_len
--   ARGV[5] content_type  ARGV[6] inbox_max_len
--   ARGV[7] number of topics T, then per topic: name, window_ms, max_len, n_inboxes
--   then the items, each starting with kind, outbox_id, message_id:
--   'r' route:  topic index (1-based, in the table), payload                     (5 arguments)
--   'x' refuse: topic, reason, detail, size, preview                             (8 arguments)
-- A topic's settings and keys come once per run, not once per entry: half the arguments.
-- Returns {status, value} per item, flattened: routed/entry id, duplicate/original entry id,
-- refused/reason, or gone/'' when the entry was no longer pending (another router replica
-- routed it after reclaiming it): XACK is the fence, so no entry is routed twice.
-- A routed pair is followed by one undelivered/<subscriber> pair per full inbox it skipped
-- and one missing/<subscriber> pair per inbox that does not exist.
--
-- This script never creates an inbox or a topic log (only the bus apply does): the router's
-- plan may be older than the prune that just deleted them, and an XADD would bring a removed
-- agent's inbox or a removed topic's log back for good. A subscriber whose inbox does not
-- exist is skipped like a full one (reason inbox_missing); an entry whose topic log does not
-- exist is refused with its payload (reason topic_missing).
--
-- Inboxes are never trimmed (no MAXLEN on their XADD). A length cap would let a flooding
-- sender evict what a victim has not read yet, and Redis 7 even drops trimmed entries from
-- the pending list, so delivered-but-unacked ones would vanish too. The agent deletes each
-- entry from its own inbox when it acks it (XACK + XDEL), so an inbox holds only unfinished
-- work. Memory stays bounded by refusing instead: an inbox already holding inbox_max_len
-- entries does not get the new one (the topic log and the other subscribers still do); the
-- skip is recorded in `refused` (reason inbox_full, naming the subscriber) and listed in the
-- sender's receipt (field undelivered). XLEN runs here, in the same script as the XADD, so
-- no other write can slip between the check and the append.
local outbox, breaker, receipts, refused = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sender, group, receipts_max, refused_max, ct = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local inbox_max = tonumber(ARGV[6])

-- Each distinct key is type-checked once per run (a batch repeats the same topic and inboxes).
-- A key seen as 'none' stays so for an inbox or topic log (never created here); receipts and
-- refused may be created by this run, which stream_ok allows either way.
local types = {}
local function type_of(key)
  local t = types[key]
  if t == nil then
    t = redis.call('TYPE', key)['ok']
    types[key] = t
  end
  return t
end
local function stream_ok(key)
  local t = type_of(key)
  return t == 'stream' or t == 'none'
end
if not stream_ok(receipts) or not stream_ok(refused) or not stream_ok(outbox) then
  return redis.error_reply('WRONGTYPE receipts, refused or outbox key of ' .. sender .. ' is not a stream')
end

-- Only a closed breaker lets entries through (no hash: never probed, closed).
local breaker_reason = nil
local state = redis.pcall('HGET', breaker, 'state')
if state == 'half_open' then
  breaker_reason = 'breaker_half_open'
elseif state and state ~= 'closed' then  -- open, unreadable or unknown: nothing gets through
  breaker_reason = 'breaker_open'
end

local function receipt(oid, mid, status, entry_id, reason, undelivered)
  if undelivered then
    redis.call('XADD', receipts, 'MAXLEN', '~', receipts_max, '*', 'outbox_id', oid, 'message_id', mid,
      'status', status, 'entry_id', entry_id, 'undelivered', undelivered)
  elseif reason then
    redis.call('XADD', receipts, 'MAXLEN', '~', receipts_max, '*', 'outbox_id', oid, 'message_id', mid,
      'status', status, 'reason', reason)
  else
    redis.call('XADD', receipts, 'MAXLEN', '~', receipts_max, '*', 'outbox_id', oid, 'message_id', mid,
      'status', status, 'entry_id', entry_id)
  end
end

local function refuse(oid, mid, topic, reason, detail, size, preview, payload)
  if payload then
    redis.call('XADD', refused, 'MAXLEN', '~', refused_max, '*', 'sender', sender, 'outbox_id', oid,
      'message_id', mid, 'topic', topic, 'reason', reason, 'detail', detail, 'size', size, 'preview', preview,
      'payload', payload)
  else
    redis.call('XADD', refused, 'MAXLEN', '~', refused_max, '*', 'sender', sender, 'outbox_id', oid,
      'message_id', mid, 'topic', topic, 'reason', reason, 'detail', detail, 'size', size, 'preview', preview)
  end
  receipt(oid, mid, 'refused', '', reason)
end

local topics = {}
-- Inbox lengths, read once per run with XLEN and counted up as this run appends.
local lengths = {}
local function inbox_len(key)
  local n = lengths[key]
  if n == nil then
    n = redis.call('XLEN', key)
    lengths[key] = n
  end
  return n
end

local k, a = 5, 8
for t = 1, tonumber(ARGV[7]) do
  local n = tonumber(ARGV[a + 3])
  topics[t] = {name = ARGV[a], window = ARGV[a + 1], max_len = ARGV[a + 2], stream = KEYS[k], first = k + 1, n = n}
  k = k + 1 + n
  a = a + 4
end

local out = {}
local routed_ids = {}  -- XDELed in one call at the end
while a <= #ARGV do
  local kind, oid, mid = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if kind == 'r' then
    local tp, payload = topics[tonumber(ARGV[a + 3])], ARGV[a + 4]
    local topic, tkey, first, n = tp.name, tp.stream, tp.first, tp.n
    local mark = KEYS[k]
    a = a + 5
    k = k + 1
    if redis.call('XACK', outbox, group, oid) == 0 then
      out[#out + 1] = 'gone'; out[#out + 1] = ''
    else
      routed_ids[#routed_ids + 1] = oid
      local size = tostring(#payload)
      if breaker_reason then
        refuse(oid, mid, topic, breaker_reason, 'the circuit breaker of ' .. sender .. ' is not closed', size,
          '', payload)
        out[#out + 1] = 'refused'; out[#out + 1] = breaker_reason
      else
        -- Check every key before the first write (no rollback): a mark of another type, or a
        -- topic/inbox that is not a stream, refuses the entry instead of half-routing it.
        local bad = nil
        if not stream_ok(tkey) then bad = tkey end
        for i = first, first + n - 1 do
          if not stream_ok(KEYS[i]) then bad = KEYS[i] end
        end
        -- A live mark is a duplicate: the original entry id, and the window is left alone.
        local original = redis.pcall('GET', mark)
        if type(original) == 'table' and original.err then bad = mark end
        if bad then
          refuse(oid, mid, topic, 'route_failed', bad .. ' is of the wrong type', size, '', payload)
          out[#out + 1] = 'refused'; out[#out + 1] = 'route_failed'
        elseif type_of(tkey) == 'none' then
          refuse(oid, mid, topic, 'topic_missing', 'the log stream of ' .. topic .. ' does not exist', size, '',
            payload)
          out[#out + 1] = 'refused'; out[#out + 1] = 'topic_missing'
        else
          if original then
            receipt(oid, mid, 'duplicate', original, nil)
            out[#out + 1] = 'duplicate'; out[#out + 1] = original
          else
            local id = redis.call('XADD', tkey, 'MAXLEN', '~', tp.max_len, '*', 'message_id', mid, 'sender', sender,
              'payload', payload, 'content_type', ct)
            redis.call('SET', mark, id, 'NX', 'PX', tp.window)
            local full, missing = {}, {}
            for i = first, first + n - 1 do
              local inbox = KEYS[i]
              if type_of(inbox) == 'none' then
                missing[#missing + 1] = string.match(inbox, 'inbox:([^:]*)$') or inbox
              elseif inbox_len(inbox) >= inbox_max then
                full[#full + 1] = string.match(inbox, 'inbox:([^:]*)$') or inbox  -- the key itself if not an inbox name
              else
                redis.call('XADD', inbox, '*', 'topic', topic, 'message_id', mid,
                  'sender', sender, 'payload', payload, 'content_type', ct, 'topic_entry_id', id)
                lengths[inbox] = lengths[inbox] + 1
              end
            end
            out[#out + 1] = 'routed'; out[#out + 1] = id
            if #full > 0 or #missing > 0 then
              local skipped = {}
              for _, sub in ipairs(full) do
                redis.call('XADD', refused, 'MAXLEN', '~', refused_max, '*', 'sender', sender, 'outbox_id', oid,
                  'message_id', mid, 'topic', topic, 'reason', 'inbox_full', 'subscriber', sub,
                  'detail', 'the inbox of ' .. sub .. ' holds inbox_max_len (' .. ARGV[6] ..
                  ') unfinished entries; not delivered to it', 'size', size, 'preview', '', 'topic_entry_id', id)
                out[#out + 1] = 'undelivered'; out[#out + 1] = sub
                skipped[#skipped + 1] = sub
              end
              for _, sub in ipairs(missing) do
                redis.call('XADD', refused, 'MAXLEN', '~', refused_max, '*', 'sender', sender, 'outbox_id', oid,
                  'message_id', mid, 'topic', topic, 'reason', 'inbox_missing', 'subscriber', sub,
                  'detail', 'the inbox of ' .. sub .. ' does not exist (removed from the spec?); not delivered to it',
                  'size', size, 'preview', '', 'topic_entry_id', id)
                out[#out + 1] = 'missing'; out[#out + 1] = sub
                skipped[#skipped + 1] = sub
              end
              receipt(oid, mid, 'routed', id, nil, table.concat(skipped, ','))
            else
              receipt(oid, mid, 'routed', id, nil)
            end
          end
        end
      end
    end
  elseif kind == 'x' then
    local topic, reason, detail, size, preview = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
    a = a + 8
    if redis.call('XACK', outbox, group, oid) == 0 then
      out[#out + 1] = 'gone'; out[#out + 1] = ''
    else
      routed_ids[#routed_ids + 1] = oid
      refuse(oid, mid, topic, reason, detail, size, preview, nil)
      out[#out + 1] = 'refused'; out[#out + 1] = reason
    end
  else
    return redis.error_reply('ERR route.lua: unknown item kind ' .. tostring(kind))
  end
end
if #routed_ids > 0 then
  redis.call('XDEL', outbox, unpack(routed_ids))
end
return out
