-- room_leave.lua: end one session's membership of a room; the user leaves
-- the room (typing cleared first) when none of their sessions remains in it.
-- KEYS[1] P{T}log   KEYS[2] P{T}r/ROOM/members   KEYS[3] P{T}r/ROOM/ms
-- KEYS[4] P{T}r/ROOM/n   KEYS[5] P{T}mdl   KEYS[6] P{T}r/ROOM/typing
-- KEYS[7] P{T}r/ROOM/tnames   KEYS[8] P{T}tdl
-- ARGV[1..3] see lib.lua; ARGV[4] room; ARGV[5] user id; ARGV[6] session
-- id; ARGV[7] mode: "leave" (unconditional), "held" (only a stream-held
-- membership) or "reap" (only when its deadline has passed); ARGV[8] the
-- user's status; ARGV[9] name; ARGV[10] avatar; ARGV[11] the deadline that
-- caused it (ms, 0 for none; a reap uses the membership's own); ARGV[12]
-- the session instance's gen ("" for any): the follow-up of a session's end
-- leaves a newer instance of the same session id alone.
-- Returns {left (1 if the user left the room), kind ("" if there was no
-- such membership, or it was kept)}.
local room, uid = ARGV[4], ARGV[5]
local f = uid .. ' ' .. ARGV[6]
local entry = room .. ' ' .. f
local v = redis.call('HGET', KEYS[3], f)
if not v then
  redis.call('ZREM', KEYS[5], entry)
  return { 0, '' }
end
if ARGV[12] ~= '' and string.sub(v, 2) ~= ARGV[12] then return { 0, '' } end
local kind = string.sub(v, 1, 1)
local mode = ARGV[7]
local deadline = tonumber(ARGV[11])
if deadline == 0 then deadline = nil end
if mode == 'held' then
  if kind ~= '~' then return { 0, '' } end
  deadline = NOW -- the held membership's deadline is now
end
if mode == 'reap' then
  local d = redis.call('ZSCORE', KEYS[5], entry)
  d = d and tonumber(d) or NOW
  if d > NOW then return { 0, '' } end
  deadline = d
end
redis.call('HDEL', KEYS[3], f)
redis.call('ZREM', KEYS[5], entry)
if redis.call('HINCRBY', KEYS[4], uid, -1) > 0 then return { 0, kind } end
redis.call('HDEL', KEYS[4], uid)
clear_typing(room, uid, deadline, KEYS[6], KEYS[7], KEYS[8])
redis.call('ZREM', KEYS[2], uid)
emit({ k = 'leave', room = room, u = uid, n = ARGV[9], a = ARGV[10], to = ARGV[8], dl = deadline,
  mc = redis.call('ZCARD', KEYS[2]) })
return { 1, kind }
