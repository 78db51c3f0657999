-- Publish messages of one sender: breaker check, dedup marks and stream entries, atomically.
-- KEYS[1] breaker hash of the sender; for item i: KEYS[2i] topic stream, KEYS[2i+1] dedup mark
-- ARGV[1] sender, ARGV[2] content_type; for item i: ARGV[4i-1] window_ms, ARGV[4i] max_len,
--   ARGV[4i+1] message_id, ARGV[4i+2] payload (JSON)
-- Returns {"ok"|"dup", entry_id} per item, flattened (a duplicate returns the original entry id),
-- or {"breaker", state, retry_at_ms, now_ms} when the sender's breaker is not closed.
-- One call carries a whole batch of publish_many: one script run instead of one per message.
-- Every key touched is declared in KEYS (Redis ACL checks scripts against them).
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'closed' then
  local h = redis.call('HMGET', KEYS[1], 'opened_at_ms', 'cooldown_ms')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local retry_at = 0
  if state == 'open' then
    retry_at = tonumber(h[1] or '0') + tonumber(h[2] or '0')
  end
  return {'breaker', state, tostring(retry_at), tostring(now)}
end
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local mark = KEYS[2 * i + 1]
  local a = 4 * i - 1
  -- A live mark is a duplicate: return the original entry id and leave the window alone.
  -- Otherwise append first and mark after: scripts have no rollback, so if XADD fails
  -- (wrong type, OOM) nothing was written, and a mark always names an existing entry.
  local original = redis.call('GET', mark)
  if original then
    out[2 * i - 1] = 'dup'
    out[2 * i] = original
  else
    local id = redis.call('XADD', KEYS[2 * i], 'MAXLEN', '~', ARGV[a + 1], '*',
      'message_id', ARGV[a + 2], 'sender', ARGV[1], 'payload', ARGV[a + 3], 'content_type', ARGV[2])
    redis.call('SET', mark, id, 'PX', ARGV[a])
    out[2 * i - 1] = 'ok'
    out[2 * i] = id
  end
end
return out
