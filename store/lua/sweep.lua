-- sweep.lua: reap sessions, stream-held memberships and typing marks whose
-- deadline has passed. Every node runs it every SweepInterval; reaping is
-- idempotent, so concurrent sweepers (and keyspace-event reaps) make each
-- transition exactly once.
-- KEYS[1] Pdeadlines   KEYS[2] Ptyping-deadlines   KEYS[3] Pmember-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] most entries to reap per index per call.
-- Returns {sessions, typing marks, memberships examined}: a caller that gets
-- the limit back calls again.
local limit = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  local sp = string.find(member, ' ', 1, true)
  reap_session(string.sub(member, 1, sp - 1), string.sub(member, sp + 1))
end
-- Memberships after sessions: a session that expired took its memberships
-- (and their index entries) with it.
local mdue = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(mdue) do
  local a = string.find(member, ' ', 1, true)
  local b = string.find(member, ' ', a + 1, true)
  reap_member(string.sub(member, 1, a - 1), string.sub(member, a + 1, b - 1), string.sub(member, b + 1))
end
local tdue = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW, 'LIMIT', 0, limit)
for _, member in ipairs(tdue) do
  local sp = string.find(member, ' ', 1, true)
  reap_typing(string.sub(member, 1, sp - 1), string.sub(member, sp + 1))
end
return { #due, #tdue, #mdue }
