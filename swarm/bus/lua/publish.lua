-- Publish one message: breaker check, dedup mark and stream entry in one atomic step.
-- KEYS[1] breaker hash of the sender   KEYS[2] topic stream   KEYS[3] dedup mark
-- ARGV: window_ms, max_len, message_id, sender, payload, content_type
-- Returns {"ok", entry_id} | {"dup", original_entry_id} | {"breaker", state, retry_at_ms, now_ms}
-- Every key touched is declared in KEYS (Redis ACL checks scripts against them).
local state = redis.call('HMGET', KEYS[1], 'state', 'opened_at_ms', 'cooldown_ms')
if state[1] and state[1] ~= 'closed' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local retry_at = 0
  if state[1] == 'open' then
    retry_at = tonumber(state[2] or '0') + tonumber(state[3] or '0')
  end
  return {'breaker', state[1], tostring(retry_at), tostring(now)}
end
-- The placeholder is never visible: the script is atomic and replaces it below.
if not redis.call('SET', KEYS[3], '', 'NX', 'PX', ARGV[1]) then
  return {'dup', redis.call('GET', KEYS[3])}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'message_id', ARGV[3], 'sender', ARGV[4], 'payload', ARGV[5], 'content_type', ARGV[6])
redis.call('SET', KEYS[3], id, 'KEEPTTL')
return {'ok', id}
