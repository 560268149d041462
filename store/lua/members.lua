-- members.lua: a room's live members in join order, with profile and status.
-- Runs without lib.lua (whose top level would cost more than a small room's
-- read); the user key layout is lib.lua's.
-- KEYS[1] P{r:ROOM}:members
-- ARGV[1..3] see lib.lua.
-- Returns a flat array: id, name, avatar, status, lastSeen ms, ... per member.
local P = ARGV[1]
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local u = redis.call('HMGET', P .. '{u:' .. id .. '}:user', 'name', 'avatar', 'st', 'seen')
  out[#out + 1] = id
  out[#out + 1] = u[1] or ''
  out[#out + 1] = u[2] or ''
  out[#out + 1] = u[3] or 'offline'
  out[#out + 1] = u[4] or '0'
end
return out
