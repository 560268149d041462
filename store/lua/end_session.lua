-- end_session.lua: end one session now (explicit offline, which also leaves
-- a tombstone), or reap it if its deadline has passed (expiry).
-- KEYS[1] P{u:ID}:sess   KEYS[2] Pdeadlines   KEYS[3] P{u:ID}:end:SID
-- KEYS[4] Pmember-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id;
-- ARGV[6] "end" (unconditional) or "reap" (only when due);
-- ARGV[7] how long the tombstone of an "end" stands (ms).
-- Returns 1 if a session was removed.
if ARGV[6] == 'reap' then
  return reap_session(ARGV[4], ARGV[5])
end
-- Recorded even when the session is already gone: a frozen node may still
-- hold a stream of it and must not revive it with a late refresh.
redis.call('SET', KEYS[3], '1', 'PX', ARGV[7])
return remove_session(ARGV[4], ARGV[5], nil)
