-- leave.lua: take one session out of a room; the user leaves the room when
-- none of their sessions remains in it.
-- KEYS[1] P{u:ID}:sess   KEYS[2] P{r:ROOM}:members
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] room.
-- Returns 1 if the user left the room.
local uid, sid, room = ARGV[4], ARGV[5], ARGV[6]
local raw = redis.call('HGET', KEYS[1], sid)
if not raw then return 0 end
local rec = cjson.decode(raw)
local kept = {}
for _, r in ipairs(rec.r) do if r ~= room then kept[#kept + 1] = r end end
if #kept == #rec.r then return 0 end
rec.r = kept -- an empty list encodes as {}, which decodes back to an empty table
redis.call('HSET', KEYS[1], sid, cjson.encode(rec))
local to, rooms = aggregate(uid)
if rooms[room] then return 0 end
clear_typing(room, uid, nil)
redis.call('ZREM', KEYS[2], uid)
local name, avatar = profile(uid)
emit({ k = 'leave', room = room, u = uid, n = name, a = avatar, to = to })
return 1
