-- end_session.lua: end one session now (explicit offline), or reap it if its
-- deadline has passed (expiry).
-- KEYS[1] P{u:ID}:sess   KEYS[2] Pdeadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id;
-- ARGV[6] "end" (unconditional) or "reap" (only when due).
-- Returns 1 if a session was removed.
if ARGV[6] == 'reap' then
  return reap_session(ARGV[4], ARGV[5])
end
return remove_session(ARGV[4], ARGV[5], nil)
