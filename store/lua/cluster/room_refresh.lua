-- room_refresh.lua: the hot refresh of one session's membership of a room.
-- Runs without lib.lua.
-- KEYS[1] P{T}r/ROOM/ms   KEYS[2] P{T}mdl
-- ARGV[1] "uid sid"; ARGV[2] room; ARGV[3] hold ms (0: the membership is
-- an API join); ARGV[4] the session's ttl ms.
-- Returns 1 when the membership exists with the kind the call keeps and its
-- deadline moved (now+hold if held, now+ttl if permanent), 0 otherwise
-- (nothing written: the caller runs room_join.lua).
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local kind = string.sub(v, 1, 1)
local d
if kind == '~' then
  d = tonumber(ARGV[3])
  if d <= 0 then return 0 end -- an API join of a held membership: room_join makes it permanent
else
  d = tonumber(ARGV[4])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + d, ARGV[2] .. ' ' .. ARGV[1])
return 1
