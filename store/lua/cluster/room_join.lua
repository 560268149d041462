-- room_join.lua: make (or refresh) one session's membership of a room; the
-- user joins the room if none of their sessions was in it.
-- KEYS[1] P{T}log   KEYS[2] P{T}r/ROOM/members   KEYS[3] P{T}r/ROOM/ms
-- KEYS[4] P{T}r/ROOM/n   KEYS[5] P{T}mdl
-- ARGV[1..3] see lib.lua; ARGV[4] room; ARGV[5] user id; ARGV[6] session
-- id; ARGV[7] kind ("+" permanent, "~" held: as the session's record says);
-- ARGV[8] ms until the membership's deadline (hold, or the session's ttl);
-- ARGV[9] name; ARGV[10] avatar; ARGV[11] the user's status; ARGV[12] the
-- session instance's gen.
-- Returns 1 if the user joined the room.
local room, uid = ARGV[4], ARGV[5]
local f = uid .. ' ' .. ARGV[6]
if redis.call('HSET', KEYS[3], f, ARGV[7] .. ARGV[12]) == 1 then
  redis.call('HINCRBY', KEYS[4], uid, 1)
end
redis.call('ZADD', KEYS[5], NOW + tonumber(ARGV[8]), room .. ' ' .. f)
if redis.call('ZSCORE', KEYS[2], uid) then return 0 end
redis.call('ZADD', KEYS[2], NOW, uid)
emit({ k = 'join', room = room, u = uid, n = ARGV[9], a = ARGV[10], to = ARGV[11],
  mc = redis.call('ZCARD', KEYS[2]) })
return 1
