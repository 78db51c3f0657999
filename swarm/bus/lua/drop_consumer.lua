-- Delete a consumer of a group only if it holds no pending entry, atomically (swarm/bus/router.py).
-- XGROUP DELCONSUMER drops the consumer's pending entries with it: checked in the same
-- script run, so an entry read between the check and the delete cannot be lost.
-- KEYS[1] stream   ARGV[1] group   ARGV[2] consumer
-- Returns 1 if deleted, 0 if it holds pending entries (or does not exist).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
