-- typing.lua: mark or unmark a user as typing in a room. Only a member of
-- the room may start typing there.
-- KEYS[1] P{r:ROOM}:typing   KEYS[2] P{r:ROOM}:tnames   KEYS[3] Ptyping-deadlines
-- KEYS[4] P{r:ROOM}:members
-- ARGV[1..3] see lib.lua; ARGV[4] room; ARGV[5] user id; ARGV[6] display
-- name; ARGV[7] "1" typing, "0" stopped; ARGV[8] typing ttl ms.
local room, uid = ARGV[4], ARGV[5]
if ARGV[7] ~= '1' then
  clear_typing(room, uid, nil)
  return 0
end
if not redis.call('ZSCORE', KEYS[4], uid) then
  return redis.error_reply('PRESENCE_NOT_MEMBER')
end
redis.call('ZADD', KEYS[3], NOW + tonumber(ARGV[8]), room .. ' ' .. uid)
redis.call('HSET', KEYS[2], uid, ARGV[6])
if redis.call('ZSCORE', KEYS[1], uid) then return 0 end
redis.call('ZADD', KEYS[1], NOW, uid)
emit({ k = 'typing', room = room, typing = typing_list(room) })
return 1
