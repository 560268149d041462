-- leave.lua: take one session out of a room; the user leaves the room when
-- none of their sessions remains in it.
-- KEYS[1] P{u:ID}:sess   KEYS[2] P{r:ROOM}:members   KEYS[3] Pmember-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] room.
-- Returns 1 if the user left the room.
local uid, sid, room = ARGV[4], ARGV[5], ARGV[6]
local raw = redis.call('HGET', KEYS[1], sid)
if not raw then return 0 end
local rec = cjson.decode(raw)
if not has(rec.r, room) then return 0 end
return leave_room(uid, sid, rec, room, nil)
