-- user_heartbeat.lua: create or refresh a session, optionally putting a
-- room into it (the room's own membership is the room partition's:
-- room_join.lua, called next by the caller).
-- KEYS[1] P{T}log   KEYS[2] P{T}u/ID/user   KEYS[3] P{T}u/ID/sess
-- KEYS[4] P{T}u/ID/ttl/SID   KEYS[5] P{T}u/ID/end/SID   KEYS[6] P{T}deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] name;
-- ARGV[7] avatar; ARGV[8] status ("" keeps the session's); ARGV[9] "1" when
-- ARGV[10] (metadata JSON) replaces the user's metadata; ARGV[11] ttl ms;
-- ARGV[12] room ("" for none); ARGV[13] most sessions per user; ARGV[14]
-- most rooms per session; ARGV[15] hold ms of the membership (0: an API
-- join, permanent); ARGV[16] "client" (clears the session's EndSession
-- tombstone) or "stream" (refused while it stands).
-- Returns "status|kind|gen|perm": the user's status after the call, the
-- room's kind in the session ("+" or "~", "" without a room), the session
-- instance's gen and its API-joined rooms, space separated.
local uid, sid = ARGV[4], ARGV[5]
local ttl = tonumber(ARGV[11])
local room = ARGV[12]
local hold = tonumber(ARGV[15])
if ARGV[16] == 'stream' and redis.call('EXISTS', KEYS[5]) == 1 then
  return redis.error_reply('PRESENCE_ENDED')
end
local from = redis.call('HGET', KEYS[2], 'st') or 'offline'
local raw = redis.call('HGET', KEYS[3], sid)
if not raw and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[13]) then
  return redis.error_reply('PRESENCE_LIMIT sessions')
end
local status, entries, gen = 'online', {}, nil
if raw then status, entries, gen = parse(raw) else gen = new_gen() end
local previous = raw and status
if ARGV[8] ~= '' then status = ARGV[8] end
local kind, at = '', nil
if room ~= '' then
  for i, e in ipairs(entries) do if e[2] == room then at = i end end
  if not at then
    if #entries >= tonumber(ARGV[14]) then return redis.error_reply('PRESENCE_LIMIT rooms') end
    kind = hold > 0 and '~' or '+'
  else
    -- A held room becomes permanent on an API join; a permanent one stays.
    kind = entries[at][1]
    if kind == '~' and hold <= 0 then kind = '+' end
  end
end
-- Past every refusal: from here on the call changes state.
if ARGV[16] ~= 'stream' then redis.call('DEL', KEYS[5]) end
if room ~= '' then
  if at then entries[at][1] = kind else entries[#entries + 1] = { kind, room } end
end
redis.call('HSET', KEYS[3], sid, format(status, gen, entries))
redis.call('SET', KEYS[4], '1', 'PX', ttl)
redis.call('ZADD', KEYS[6], NOW + ttl, uid .. ' ' .. sid)
redis.call('HSET', KEYS[2], 'name', ARGV[6], 'avatar', ARGV[7], 'seen', NOW)
if ARGV[9] == '1' then redis.call('HSET', KEYS[2], 'meta', ARGV[10]) end
redis.call('PEXPIRE', KEYS[2], RETENTION + ttl)

local to = from
if status ~= previous then
  local rooms
  to, rooms = aggregate(KEYS[3], nil)
  -- A room new to the user is announced (room_join.lua) after the status,
  -- so the status event lists only the rooms the user was already in.
  if room ~= '' and not at then
    local _, others = aggregate(KEYS[3], sid)
    if not others[room] then rooms[room] = nil end
  end
  set_status(KEYS[2], uid, from, to, sorted_keys(rooms), nil)
end
local perm = {}
for _, e in ipairs(entries) do if e[1] == '+' then perm[#perm + 1] = e[2] end end
return to .. '|' .. kind .. '|' .. gen .. '|' .. table.concat(perm, ' ')
