-- detach.lua: a stream holding a session in a room closed without an
-- explicit offline. A stream-held membership's deadline moves to now+grace
-- (never later); a permanent one is left alone; grace <= 0 ends it now.
-- KEYS[1] P{u:ID}:sess   KEYS[2] Pmember-deadlines   KEYS[3] P{r:ROOM}:members
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] room;
-- ARGV[7] grace ms.
-- Returns 1 if the user left the room now.
local uid, sid, room = ARGV[4], ARGV[5], ARGV[6]
local grace = tonumber(ARGV[7])
local raw = redis.call('HGET', KEYS[1], sid)
if not raw then return 0 end
local rec = cjson.decode(raw)
if not (rec.h and rec.h[room]) then return 0 end
if grace <= 0 then return leave_room(uid, sid, rec, room, NOW) end
-- The index holds the deadline (the record's h may predate fast refreshes).
local entry = uid .. ' ' .. sid .. ' ' .. room
local d = tonumber(redis.call('ZSCORE', KEYS[2], entry)) or rec.h[room]
local at = NOW + grace
if at < d then
  rec.h[room] = at
  redis.call('HSET', KEYS[1], sid, cjson.encode(rec))
  redis.call('ZADD', KEYS[2], at, entry)
end
return 0
