-- heartbeat.lua: create or refresh a session, optionally joining a room.
-- KEYS[1] P{u:ID}:user   KEYS[2] P{u:ID}:sess   KEYS[3] P{u:ID}:ttl:SID
-- KEYS[4] Pdeadlines     KEYS[5] P{r:ROOM}:members (only when joining)
-- KEYS[6] P{u:ID}:end:SID   KEYS[7] Pmember-deadlines
-- ARGV[1..3] see lib.lua; ARGV[4] user id; ARGV[5] session id; ARGV[6] name;
-- ARGV[7] avatar; ARGV[8] status ("" keeps the session's); ARGV[9] "1" when
-- ARGV[10] (metadata JSON) replaces the user's metadata; ARGV[11] ttl ms;
-- ARGV[12] room to join ("" for none); ARGV[13] most sessions per user;
-- ARGV[14] most rooms per session; ARGV[15] hold ms of the membership (0:
-- permanent); ARGV[16] "client" (an explicit heartbeat or join: clears the
-- session's EndSession tombstone) or "stream" (a stream's refresh: refused
-- while the tombstone stands).
-- Returns the user's status after the call.
local uid, sid = ARGV[4], ARGV[5]
local ttl = tonumber(ARGV[11])
local room = ARGV[12]
local hold = tonumber(ARGV[15])

if ARGV[16] == 'stream' then
  if redis.call('EXISTS', KEYS[6]) == 1 then
    return redis.error_reply('PRESENCE_ENDED')
  end
end

local from = published_status(uid)
local raw = redis.call('HGET', KEYS[2], sid)
if not raw and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[13]) then
  return redis.error_reply('PRESENCE_LIMIT sessions')
end
local rec
if raw then rec = cjson.decode(raw) else rec = { s = 'online', r = {} } end
local previous = raw and rec.s
if ARGV[8] ~= '' then rec.s = ARGV[8] end
rec.d = NOW + ttl
local joining = room ~= '' and not has(rec.r, room)
if joining and #rec.r >= tonumber(ARGV[14]) then
  return redis.error_reply('PRESENCE_LIMIT rooms')
end
-- Past every refusal: from here on the call changes state.
if ARGV[16] ~= 'stream' then redis.call('DEL', KEYS[6]) end
if joining then rec.r[#rec.r + 1] = room end
if room ~= '' then
  -- The membership's deadline: a new one held by a stream gets now+hold; a
  -- held one moves to now+hold, or becomes permanent on an API join (hold
  -- 0); a permanent one stays permanent.
  local held = rec.h and rec.h[room]
  local entry = uid .. ' ' .. sid .. ' ' .. room
  if hold > 0 and (joining or held) then
    rec.h = rec.h or {}
    rec.h[room] = NOW + hold
    redis.call('ZADD', KEYS[7], rec.h[room], entry)
  elseif held then
    rec.h[room] = nil
    if next(rec.h) == nil then rec.h = nil end
    redis.call('ZREM', KEYS[7], entry)
  end
end
redis.call('HSET', KEYS[2], sid, cjson.encode(rec))
redis.call('SET', KEYS[3], '1', 'PX', ttl)
redis.call('ZADD', KEYS[4], rec.d, uid .. ' ' .. sid)

redis.call('HSET', KEYS[1], 'name', ARGV[6], 'avatar', ARGV[7], 'seen', NOW)
if ARGV[9] == '1' then redis.call('HSET', KEYS[1], 'meta', ARGV[10]) end
redis.call('PEXPIRE', KEYS[1], RETENTION + ttl)

local member = room ~= '' and redis.call('ZSCORE', KEYS[5], uid)
local to = from
-- Most calls refresh an existing session without changing its status (the
-- hottest write path): the user's aggregate cannot change then, so the
-- sessions are not read again.
if rec.s ~= previous then
  local rooms
  to, rooms = aggregate(uid)
  -- A new membership is announced after the status, so the status event
  -- lists only the rooms the user was already in.
  if room ~= '' and not member then rooms[room] = nil end
  set_status(uid, from, to, sorted_keys(rooms), nil)
end

if room ~= '' and not member then
  redis.call('ZADD', KEYS[5], NOW, uid)
  emit({ k = 'join', room = room, u = uid, n = ARGV[6], a = ARGV[7], to = to })
end
return to
