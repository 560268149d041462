-- typing.lua (cluster): mark or unmark a user as typing in a room. Only a
-- member of the room may start typing there.
-- KEYS[1] P{T}log   KEYS[2] P{T}r/ROOM/typing   KEYS[3] P{T}r/ROOM/tnames
-- KEYS[4] P{T}tdl   KEYS[5] P{T}r/ROOM/members
-- ARGV[1..3] see lib.lua; ARGV[4] room; ARGV[5] user id; ARGV[6] display
-- name; ARGV[7] "1" typing, "0" stopped, "reap" (clear only if due);
-- ARGV[8] typing ttl ms.
local room, uid = ARGV[4], ARGV[5]
if ARGV[7] == 'reap' then
  local d = redis.call('ZSCORE', KEYS[4], room .. ' ' .. uid)
  if not d then return 0 end
  d = tonumber(d)
  if d > NOW then return 0 end
  redis.call('ZREM', KEYS[4], room .. ' ' .. uid)
  clear_typing(room, uid, d, KEYS[2], KEYS[3], KEYS[4])
  return 1
end
if ARGV[7] ~= '1' then
  clear_typing(room, uid, nil, KEYS[2], KEYS[3], KEYS[4])
  return 0
end
if not redis.call('ZSCORE', KEYS[5], uid) then
  return redis.error_reply('PRESENCE_NOT_MEMBER')
end
redis.call('ZADD', KEYS[4], NOW + tonumber(ARGV[8]), room .. ' ' .. uid)
redis.call('HSET', KEYS[3], uid, ARGV[6])
if redis.call('ZSCORE', KEYS[2], uid) then return 0 end
redis.call('ZADD', KEYS[2], NOW, uid)
emit({ k = 'typing', room = room, typing = typing_list(room, KEYS[2], KEYS[3]) })
return 1
