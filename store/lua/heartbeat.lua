-- heartbeat.lua: create or refresh a session, optionally joining a room.
-- KEYS[1] P{u:ID}:user   KEYS[2] P{u:ID}:sess   KEYS[3] P{u:ID}:ttl:SID
-- KEYS[4] Pdeadlines     KEYS[5] P{r:ROOM}:members (only when joining)
-- KEYS[6] P{u:ID}:end:SID   KEYS[7] Pmember-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] name;
-- ARGV[7] avatar; ARGV[8] status ("" keeps the session's); ARGV[9] "1" when
-- ARGV[10] (metadata JSON) replaces the user's metadata; ARGV[11] ttl ms;
-- ARGV[12] room to join ("" for none); ARGV[13] most sessions per user;
-- ARGV[14] most rooms per session; ARGV[15] hold ms of the membership (0:
-- permanent); ARGV[16] "client" (an explicit heartbeat or join: clears the
-- session's EndSession tombstone) or "stream" (a stream's refresh: refused
-- while the tombstone stands).
-- Returns the user's status after the call.
local to, refusal = heartbeat_one(KEYS, 0, ARGV, 3)
if not to then return redis.error_reply(refusal) end
return to
