-- The circuit breaker of one agent, shared by every process (mirror of swarm/bus/breaker.py).
-- KEYS[1] breaker hash   KEYS[2] watch event stream
-- ARGV: op (read|acquire|success|failure|reset|lock), epoch, failure_threshold, cooldown_ms,
--       max_cooldown_ms, probe_timeout_ms, agent_id, now_ms ('' = Redis TIME), events_maxlen,
--       lock_ms (op lock only)
-- Watch events carry 'agent' like the registry's own events (and 'agent_id'), data JSON.
-- Returns {state, failures, epoch, opened_at_ms, cooldown_ms, probe, ticket, transition, now_ms}
-- ticket is the epoch a health check runs under (-1: none); transition is '' or the new state.
local op = ARGV[1]
local now
if ARGV[8] ~= '' then
  now = tonumber(ARGV[8])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'epoch', 'opened_at_ms', 'cooldown_ms', 'probe', 'lock_until_ms')
local s = {
  state = h[1] or 'closed', failures = tonumber(h[2] or '0'), epoch = tonumber(h[3] or '0'),
  opened_at_ms = tonumber(h[4] or '0'), cooldown_ms = tonumber(h[5] or '0'), probe = tonumber(h[6] or '0'),
}
local threshold = tonumber(ARGV[3])
local base_cooldown = tonumber(ARGV[4])
local max_cooldown = tonumber(ARGV[5])
local probe_timeout = tonumber(ARGV[6])
local ticket = -1
local transition = ''
local changed = false

local function move(to)
  transition = to
  s.state = to
  s.epoch = s.epoch + 1
  changed = true
end

local function reply()
  return {s.state, tostring(s.failures), tostring(s.epoch), tostring(s.opened_at_ms),
          tostring(s.cooldown_ms), tostring(s.probe), tostring(ticket), transition, tostring(now)}
end

if op == 'read' then
  return reply()
elseif op == 'lock' then
  -- One health check per agent per interval, however many registry processes probe.
  if tonumber(h[7] or '0') > now then return reply() end
  redis.call('HSET', KEYS[1], 'lock_until_ms', tostring(now + tonumber(ARGV[10])))
  if not h[1] then changed = true end
  ticket = s.epoch
elseif op == 'acquire' then
  if s.state == 'closed' then
    ticket = s.epoch
  elseif s.state == 'open' then
    if now >= s.opened_at_ms + s.cooldown_ms then
      move('half_open')
      s.probe = now + probe_timeout
      ticket = s.epoch
    end
  elseif now >= s.probe then
    s.epoch = s.epoch + 1
    s.probe = now + probe_timeout
    ticket = s.epoch
    changed = true
  end
elseif op == 'success' or op == 'failure' then
  local ok = op == 'success'
  if tonumber(ARGV[2]) == s.epoch and s.state ~= 'open' then
    changed = true
    if s.state == 'closed' then
      if ok then
        s.failures = 0
      else
        s.failures = s.failures + 1
        if s.failures > threshold then
          move('open')
          s.opened_at_ms = now
          s.cooldown_ms = base_cooldown
        end
      end
    elseif ok then
      move('closed')
      s.failures = 0; s.opened_at_ms = 0; s.cooldown_ms = 0; s.probe = 0
    else
      local c = math.max(s.cooldown_ms, base_cooldown) * 2
      if c > max_cooldown then c = max_cooldown end
      move('open')
      s.failures = s.failures + 1; s.opened_at_ms = now; s.cooldown_ms = c; s.probe = 0
    end
  end
elseif op == 'reset' then
  local was = s.state
  s = {state = 'closed', failures = 0, epoch = s.epoch + 1, opened_at_ms = 0, cooldown_ms = 0, probe = 0}
  changed = true
  if was ~= 'closed' then transition = 'closed' end
else
  return redis.error_reply('unknown breaker op ' .. op)
end

if changed then
  redis.call('HSET', KEYS[1], 'state', s.state, 'failures', tostring(s.failures), 'epoch', tostring(s.epoch),
    'opened_at_ms', tostring(s.opened_at_ms), 'cooldown_ms', tostring(s.cooldown_ms), 'probe', tostring(s.probe))
end
if transition == 'open' or transition == 'closed' then
  local kind = 'breaker-closed'
  if transition == 'open' then kind = 'breaker-opened' end
  local data = cjson.encode({agent_id = ARGV[7], state = s.state, failures = s.failures, epoch = s.epoch,
    cooldown_ms = s.cooldown_ms, at_ms = now})
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', 'type', kind, 'agent', ARGV[7], 'agent_id', ARGV[7],
    'data', data)
end
return reply()
