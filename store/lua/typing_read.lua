-- typing_read.lua: the users typing in a room, in the order they started.
-- Runs without lib.lua (whose top level would cost more than the read).
-- KEYS[1] P{r:ROOM}:typing   KEYS[2] P{r:ROOM}:tnames
-- ARGV[1..3] see lib.lua; ARGV[4] room.
-- Returns a flat array: id, name, ... per typist.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
if #ids == 0 then return out end
local names = redis.call('HMGET', KEYS[2], unpack(ids))
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = names[i] or id
end
return out
