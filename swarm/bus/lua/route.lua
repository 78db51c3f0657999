#!lua
-- Route a batch of ONE sender's outbox entries (the trusted router's only write path; swarm/bus/router.py).
-- The shebang makes Redis refuse the whole script when over maxmemory, before any write:
-- scripts have no rollback, so a write failing half-way must not happen.
-- KEYS[1] outbox  KEYS[2] breaker hash of the sender  KEYS[3] receipts of the sender  KEYS[4] refused
--   then for each routed item: topic stream, dedup mark, one key per subscriber inbox
-- ARGV[1] sender  ARGV[2] router group  ARGV[3] receipts_max_len  ARGV[4] refused_max_len
--   then the items, each starting with kind, outbox_id, message_id:
--   'r' route:  topic, payload, content_type, window_ms, max_len, n_inboxes       (9 arguments)
--   'x' refuse: topic, reason, detail, size, preview                              (8 arguments)
-- Returns {status, value} per item, flattened: routed/entry id, duplicate/original entry id,
-- refused/reason, or gone/'' when the entry was no longer pending (another router replica
-- routed it after reclaiming it): XACK is the fence, so no entry is routed twice.
local outbox, breaker, receipts, refused = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sender, group, receipts_max, refused_max = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function kind_of(key)
  return redis.call('TYPE', key)['ok']
end
local function stream_ok(key)
  local t = kind_of(key)
  return t == 'stream' or t == 'none'
end
if not stream_ok(receipts) or not stream_ok(refused) or not stream_ok(outbox) then
  return redis.error_reply('WRONGTYPE receipts, refused or outbox key of ' .. sender .. ' is not a stream')
end

-- Only a closed breaker lets entries through (no hash: never probed, closed).
local breaker_reason = nil
local state = redis.pcall('HGET', breaker, 'state')
if type(state) == 'table' and state.err then
  breaker_reason = 'breaker_open'
elseif state and state ~= 'closed' then
  breaker_reason = 'breaker_' .. state
end

local function receipt(oid, mid, status, entry_id, reason)
  if reason then
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

local out = {}
local k, a = 5, 5
while a <= #ARGV do
  local kind, oid, mid = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if kind == 'r' then
    local topic, payload, ct, window, max_len = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
    local n = tonumber(ARGV[a + 8])
    local tkey, mark, first = KEYS[k], KEYS[k + 1], k + 2
    a = a + 9
    k = k + 2 + n
    if redis.call('XACK', outbox, group, oid) == 0 then
      out[#out + 1] = 'gone'; out[#out + 1] = ''
    else
      redis.call('XDEL', outbox, oid)
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
        local mt = kind_of(mark)
        if mt ~= 'string' and mt ~= 'none' then bad = mark end
        for i = first, first + n - 1 do
          if not stream_ok(KEYS[i]) then bad = KEYS[i] end
        end
        if bad then
          refuse(oid, mid, topic, 'route_failed', bad .. ' is of the wrong type', size, '', payload)
          out[#out + 1] = 'refused'; out[#out + 1] = 'route_failed'
        else
          -- A live mark is a duplicate: the original entry id, and the window is left alone.
          local original = redis.call('GET', mark)
          if original then
            receipt(oid, mid, 'duplicate', original, nil)
            out[#out + 1] = 'duplicate'; out[#out + 1] = original
          else
            local id = redis.call('XADD', tkey, 'MAXLEN', '~', max_len, '*', 'message_id', mid, 'sender', sender,
              'payload', payload, 'content_type', ct)
            redis.call('SET', mark, id, 'NX', 'PX', window)
            for i = first, first + n - 1 do
              redis.call('XADD', KEYS[i], 'MAXLEN', '~', max_len, '*', 'topic', topic, 'message_id', mid,
                'sender', sender, 'payload', payload, 'content_type', ct, 'topic_entry_id', id)
            end
            receipt(oid, mid, 'routed', id, nil)
            out[#out + 1] = 'routed'; out[#out + 1] = id
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
      redis.call('XDEL', outbox, oid)
      refuse(oid, mid, topic, reason, detail, size, preview, nil)
      out[#out + 1] = 'refused'; out[#out + 1] = reason
    end
  else
    return redis.error_reply('ERR route.lua: unknown item kind ' .. tostring(kind))
  end
end
return out
