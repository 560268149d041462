-- user_leave.lua: take a room out of a session's record (the room's own
-- membership is the room partition's: room_leave.lua). Runs without lib.lua.
-- KEYS[1] P{T}u/ID/user   KEYS[2] P{T}u/ID/sess
-- ARGV[1] session id; ARGV[2] room; ARGV[3] "leave" (any kind) or "held"
-- (only a stream-held room: the follow-up of a held membership that ended).
-- Returns {status, name, avatar} of the user.
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if raw then
  local bar = string.find(raw, '|', string.find(raw, '|', 1, true) + 1, true)
  local kept, changed = {}, false
  for e in string.gmatch(string.sub(raw, bar + 1), '%S+') do
    if string.sub(e, 2) == ARGV[2] and (ARGV[3] == 'leave' or string.sub(e, 1, 1) == '~') then
      changed = true
    else
      kept[#kept + 1] = e
    end
  end
  if changed then
    redis.call('HSET', KEYS[2], ARGV[1], string.sub(raw, 1, bar) .. table.concat(kept, ' '))
  end
end
local p = redis.call('HMGET', KEYS[1], 'st', 'name', 'avatar')
return { p[1] or 'offline', p[2] or '', p[3] or '' }
