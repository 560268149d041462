-- typing_read.lua: the users typing in a room, in the order they started.
-- KEYS[1] P{r:ROOM}:typing   KEYS[2] P{r:ROOM}:tnames
-- ARGV[1..3] see lib.lua; ARGV[4] room.
-- Returns a flat array: id, name, ... per typist.
local out = {}
for _, t in ipairs(typing_list(ARGV[4])) do
  out[#out + 1] = t.id
  out[#out + 1] = t.name
end
return out
