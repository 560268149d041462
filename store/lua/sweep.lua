-- sweep.lua: reap sessions and typing marks whose deadline has passed. Every
-- node runs it every SweepInterval; reaping is idempotent, so concurrent
-- sweepers (and keyspace-event reaps) make each transition exactly once.
-- KEYS[1] Pdeadlines   KEYS[2] Ptyping-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] most entries to reap per index per call.
-- Returns {sessions examined, typing marks examined}: a caller that gets the
-- limit back calls again.
local limit = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  local sp = string.find(member, ' ', 1, true)
  reap_session(string.sub(member, 1, sp - 1), string.sub(member, sp + 1))
end
local tdue = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(tdue) do
  local sp = string.find(member, ' ', 1, true)
  reap_typing(string.sub(member, 1, sp - 1), string.sub(member, sp + 1))
end
return { #due, #tdue }
