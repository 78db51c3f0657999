-- Trim a batch of streams to about a length, in one call (swarm/bus/router.py housekeeping).
-- One script call for up to 1,000 outboxes (or dead-letter streams) instead of one command
-- each: at 10,000 agents the router's client spent most of its upkeep packing and parsing
-- 20,000 replies every 5 s. The keys share the swarm's hash tag ({name}): one slot, Cluster too.
-- KEYS stream*   ARGV[1] max length (~: whole macro nodes)   ARGV[2] '1': also each length
-- Returns per key {trimmed, length} (length 0 when not asked), or {-1, error} for a key that
-- is not a stream (WRONGTYPE): the other keys are trimmed all the same.
local out = {}
for i, key in ipairs(KEYS) do
  local trimmed = redis.pcall('XTRIM', key, 'MAXLEN', '~', ARGV[1])
  if type(trimmed) == 'table' and trimmed.err then
    out[i] = {-1, trimmed.err}
  elseif ARGV[2] == '1' then
    out[i] = {trimmed, redis.call('XLEN', key)}
  else
    out[i] = {trimmed, 0}
  end
end
return out
