-- room_detach.lua: a stream holding a session in a room closed without an
-- explicit offline: a held membership's deadline moves to now+grace, never
-- later; a permanent one is left alone. Runs without lib.lua. (A grace of
-- 0, the end at once, is room_leave.lua in "held" mode.)
-- KEYS[1] P{T}r/ROOM/ms   KEYS[2] P{T}mdl
-- ARGV[1] "uid sid"; ARGV[2] room; ARGV[3] grace ms (> 0).
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.sub(v, 1, 1) ~= '~' then return 0 end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
local entry = ARGV[2] .. ' ' .. ARGV[1]
local d = redis.call('ZSCORE', KEYS[2], entry)
if not d or at < tonumber(d) then redis.call('ZADD', KEYS[2], at, entry) end
return 0
