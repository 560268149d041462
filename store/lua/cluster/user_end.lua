-- user_end.lua: end one session now (an explicit offline, which also leaves
-- a tombstone), or reap it if its deadline has passed (expiry). The
-- session's rooms are left by the caller (room_leave.lua, one call per
-- room, in the rooms' partitions).
-- KEYS[1] P{T}log   KEYS[2] P{T}u/ID/user   KEYS[3] P{T}u/ID/sess
-- KEYS[4] P{T}u/ID/ttl/SID   KEYS[5] P{T}u/ID/end/SID   KEYS[6] P{T}deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6]
-- "end" (unconditional) or "reap" (only when due); ARGV[7] how long the
-- tombstone of an "end" stands (ms).
-- Returns nil if no session was removed, else {status after, deadline ms
-- (0 for an end), name, avatar, gen, room, room, ...}: the session
-- instance's gen and rooms.
local uid, sid = ARGV[4], ARGV[5]
local entry = uid .. ' ' .. sid
local raw = redis.call('HGET', KEYS[3], sid)
local deadline = nil
if ARGV[6] == 'reap' then
  if not raw then
    redis.call('ZREM', KEYS[6], entry)
    return nil
  end
  local d = redis.call('ZSCORE', KEYS[6], entry)
  if d then
    d = tonumber(d)
  elseif redis.call('EXISTS', KEYS[4]) == 1 then
    return nil -- not indexed but its TTL key lives: not due
  else
    d = NOW
  end
  if d > NOW then return nil end
  deadline = d
else
  -- Recorded even when the session is already gone: a frozen node may
  -- still hold a stream of it and must not revive it with a late refresh.
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[7])
end
redis.call('ZREM', KEYS[6], entry)
if not raw then return nil end
local from = redis.call('HGET', KEYS[2], 'st') or 'offline'
redis.call('HDEL', KEYS[3], sid)
redis.call('DEL', KEYS[4])
local _, entries, gen = parse(raw)
local to, rooms_after = aggregate(KEYS[3], nil)
if to == 'offline' then
  for _, e in ipairs(entries) do rooms_after[e[2]] = true end
end
set_status(KEYS[2], uid, from, to, sorted_keys(rooms_after), deadline)
redis.call('PEXPIRE', KEYS[2], RETENTION)
local p = redis.call('HMGET', KEYS[2], 'name', 'avatar')
local out = { to, deadline or 0, p[1] or '', p[2] or '', gen }
for _, e in ipairs(entries) do out[#out + 1] = e[2] end
return out
