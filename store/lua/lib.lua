-- lib.lua: shared by every presence script. On Redis 7 it is the top of the
-- presence FUNCTION library, every script a function of it; on Redis 6.2 it
-- is prepended to each script (see presence_redis.go, luaLibrary). Not a
-- script by itself.
--
-- Every script receives the same first three ARGV:
--   ARGV[1] key prefix, ARGV[2] lastSeen retention (ms), ARGV[3] event log
--   max length. Script-specific arguments start at ARGV[4].
--
-- Key layout (P = prefix). A user's keys share the {u:<id>} hash tag and a
-- room's keys the {r:<id>} tag, so each lives in one cluster slot:
--   P{u:ID}:user       hash  name, avatar, meta, seen (lastSeen ms), st (last published status)
--   P{u:ID}:sess       hash  session id -> {"s":status,"d":deadline ms,"r":[rooms],
--                            "!w":ms of the last full write (fast.lua),
--                            "h":{room: deadline ms}} (h: the stream-held rooms
--                            of r, absent when there are none). d and the values
--                            of h are only as of the last full write: the fast
--                            refresh (fast.lua) moves the deadlines in the
--                            indexes alone, so the index scores are the truth.
--   P{u:ID}:ttl:SID    string with PX ttl: its expiry raises the keyspace event
--   P{u:ID}:end:SID    string with PX ended-retention: SID was ended by EndSession
--   P{r:ID}:members    zset  user id -> ms the user became a member
--   P{r:ID}:typing     zset  user id -> ms the user started typing
--   P{r:ID}:tnames     hash  user id -> display name while typing
--   Pdeadlines         zset  "uid sid" -> session deadline ms (the sweeper's index)
--   Pmember-deadlines  zset  "uid sid room" -> stream-held membership deadline ms
--   Pepoch             string: a random token set when the data set was new; a
--                            node that finds it gone or changed knows the state was lost
--   Ptyping-deadlines  zset  "room uid" -> typing mark deadline ms
--   Plog               stream of events (catch-up after a pub/sub reconnect)
--   Pevents            pub/sub channel: "<stream id> <event json>"
-- Scripts touch the keys of the users and rooms a transition involves, which
-- are only known inside the script: they need a single Redis primary (or a
-- cluster whose slots are pinned by one hash tag per deployment), not a
-- sharded cluster.

-- The per-call values, set by begin: loaded as a Redis FUNCTION library
-- (presence_redis.go), this file's top level runs once, at FUNCTION LOAD,
-- not on every call, so nothing here may depend on a call's ARGV or time.
local P, RETENTION, LOGMAX, NOW
local DEADLINES, MEMBER_DEADLINES, TYPING_DEADLINES

-- begin is the first statement of every script or function that uses the
-- library.
local function begin(argv)
  P = argv[1]
  RETENTION = tonumber(argv[2])
  LOGMAX = tonumber(argv[3])
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  DEADLINES = P .. 'deadlines'
  MEMBER_DEADLINES = P .. 'member-deadlines'
  TYPING_DEADLINES = P .. 'typing-deadlines'
end

local RANK = { busy = 3, online = 2, away = 1 }
local BY_RANK = { [0] = 'offline', [1] = 'away', [2] = 'online', [3] = 'busy' }

local function ukey(uid, what) return P .. '{u:' .. uid .. '}:' .. what end
local function rkey(room, what) return P .. '{r:' .. room .. '}:' .. what end

local function emit(ev)
  ev.at = NOW
  local payload = cjson.encode(ev)
  local id = redis.call('XADD', P .. 'log', 'MAXLEN', '~', LOGMAX, '*', 'e', payload)
  redis.call('PUBLISH', P .. 'events', id .. ' ' .. payload)
end

local function profile(uid)
  local p = redis.call('HMGET', ukey(uid, 'user'), 'name', 'avatar')
  return p[1] or '', p[2] or ''
end

local function published_status(uid)
  return redis.call('HGET', ukey(uid, 'user'), 'st') or 'offline'
end

-- aggregate returns the user's status over the sessions in their hash and
-- the set of rooms those sessions are in.
local function aggregate(uid)
  local all = redis.call('HGETALL', ukey(uid, 'sess'))
  local best = 0
  local rooms = {}
  for i = 2, #all, 2 do
    local s = cjson.decode(all[i])
    local r = RANK[s.s] or 0
    if r > best then best = r end
    for _, room in ipairs(s.r) do rooms[room] = true end
  end
  return BY_RANK[best], rooms
end

local function sorted_keys(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

local function typing_list(room)
  local ids = redis.call('ZRANGE', rkey(room, 'typing'), 0, -1)
  local out = {}
  if #ids == 0 then return out end
  local names = redis.call('HMGET', rkey(room, 'tnames'), unpack(ids))
  for i, id in ipairs(ids) do out[i] = { id = id, name = names[i] or id } end
  return out
end

-- clear_typing removes a typing mark and announces the new set if it existed.
local function clear_typing(room, uid, deadline)
  if redis.call('ZREM', rkey(room, 'typing'), uid) == 0 then return end
  redis.call('HDEL', rkey(room, 'tnames'), uid)
  redis.call('ZREM', TYPING_DEADLINES, room .. ' ' .. uid)
  emit({ k = 'typing', room = room, typing = typing_list(room), dl = deadline })
end

-- set_status records and announces a change of the user's aggregate status.
-- name and avatar: the user's profile when the caller has it (else read).
local function set_status(uid, from, to, rooms, deadline, name, avatar)
  if from == to then return end
  redis.call('HSET', ukey(uid, 'user'), 'st', to)
  if not name then name, avatar = profile(uid) end
  emit({ k = 'status', u = uid, n = name, a = avatar, from = from, to = to,
         rooms = table.concat(rooms, ' '), dl = deadline })
end

-- remove_session ends one session: it leaves its rooms (typing cleared
-- first), and the user's status is recomputed. Returns 1 if it existed.
-- deadline is the session's deadline for an expiry, nil for an explicit end.
local function remove_session(uid, sid, deadline)
  local sk = ukey(uid, 'sess')
  local raw = redis.call('HGET', sk, sid)
  redis.call('ZREM', DEADLINES, uid .. ' ' .. sid)
  if not raw then return 0 end
  local rec = cjson.decode(raw)
  local from = published_status(uid)
  redis.call('HDEL', sk, sid)
  if rec.h then
    for room in pairs(rec.h) do redis.call('ZREM', MEMBER_DEADLINES, uid .. ' ' .. sid .. ' ' .. room) end
  end
  redis.call('DEL', ukey(uid, 'ttl:' .. sid))
  local to, rooms_after = aggregate(uid)
  local before = {}
  for room in pairs(rooms_after) do before[room] = true end
  local left = {}
  for _, room in ipairs(rec.r) do
    before[room] = true
    if not rooms_after[room] then left[#left + 1] = room end
  end
  table.sort(left)
  local name, avatar = profile(uid)
  for _, room in ipairs(left) do
    clear_typing(room, uid, deadline)
    redis.call('ZREM', rkey(room, 'members'), uid)
    emit({ k = 'leave', room = room, u = uid, n = name, a = avatar, to = to, dl = deadline,
      mc = redis.call('ZCARD', rkey(room, 'members')) })
  end
  if to == 'offline' then
    set_status(uid, from, to, sorted_keys(before), deadline)
  else
    set_status(uid, from, to, sorted_keys(rooms_after), deadline)
  end
  redis.call('PEXPIRE', ukey(uid, 'user'), RETENTION)
  return 1
end

-- reap_session ends a session only if its deadline has passed: several nodes
-- may try to reap the same session (sweepers, keyspace events) and exactly
-- one of them, atomically here, makes the transition.
local function reap_session(uid, sid)
  local raw = redis.call('HGET', ukey(uid, 'sess'), sid)
  if not raw then
    redis.call('ZREM', DEADLINES, uid .. ' ' .. sid)
    return 0
  end
  local rec = cjson.decode(raw)
  -- The index holds the deadline (the record's d may predate fast refreshes).
  local d = tonumber(redis.call('ZSCORE', DEADLINES, uid .. ' ' .. sid)) or rec.d
  if d > NOW then return 0 end
  return remove_session(uid, sid, d)
end

local function reap_typing(room, uid)
  local d = redis.call('ZSCORE', TYPING_DEADLINES, room .. ' ' .. uid)
  if not d then return 0 end
  d = tonumber(d)
  if d > NOW then return 0 end
  redis.call('ZREM', TYPING_DEADLINES, room .. ' ' .. uid)
  clear_typing(room, uid, d)
  return 1
end

-- leave_room takes session sid (its decoded record rec, which has room in
-- rec.r) out of a room and writes the record back; the user leaves the room
-- (typing cleared first) when none of their sessions remains in it.
-- deadline is the membership's deadline for an expiry, nil for a Leave.
-- Returns 1 if the user left the room.
local function leave_room(uid, sid, rec, room, deadline)
  local kept = {}
  for _, r in ipairs(rec.r) do if r ~= room then kept[#kept + 1] = r end end
  rec.r = kept -- an empty list encodes as {}, which decodes back to an empty table
  if rec.h and rec.h[room] then
    rec.h[room] = nil
    if next(rec.h) == nil then rec.h = nil end
  end
  redis.call('ZREM', MEMBER_DEADLINES, uid .. ' ' .. sid .. ' ' .. room)
  redis.call('HSET', ukey(uid, 'sess'), sid, cjson.encode(rec))
  local to, rooms = aggregate(uid)
  if rooms[room] then return 0 end
  clear_typing(room, uid, deadline)
  redis.call('ZREM', rkey(room, 'members'), uid)
  local name, avatar = profile(uid)
  emit({ k = 'leave', room = room, u = uid, n = name, a = avatar, to = to, dl = deadline,
    mc = redis.call('ZCARD', rkey(room, 'members')) })
  return 1
end

-- reap_member ends a stream-held membership only if its deadline has passed
-- (idempotent, like reap_session: sweepers on every node race for it).
local function reap_member(uid, sid, room)
  local member = uid .. ' ' .. sid .. ' ' .. room
  local raw = redis.call('HGET', ukey(uid, 'sess'), sid)
  local rec = raw and cjson.decode(raw)
  if not (rec and rec.h and rec.h[room]) then
    redis.call('ZREM', MEMBER_DEADLINES, member)
    return 0
  end
  -- The index holds the deadline (the record's h may predate fast refreshes).
  local d = tonumber(redis.call('ZSCORE', MEMBER_DEADLINES, member)) or rec.h[room]
  if d > NOW then return 0 end
  return leave_room(uid, sid, rec, room, d)
end

-- heartbeat_one creates or refreshes a session, optionally joining a room:
-- the body of heartbeat.lua (see its header for the keys and arguments),
-- also run once per item by refresh_many.lua. K[ko+1..ko+7] are the call's
-- keys and A[ao+1..ao+13] its arguments (heartbeat.lua's ARGV[4..16]).
-- Returns the user's status after the call, or false and the refusal.
local function heartbeat_one(K, ko, A, ao)
  if refresh_fast(K, ko, A, ao, NOW) then return 'fast' end
  local uid, sid = A[ao + 1], A[ao + 2]
  local ttl = tonumber(A[ao + 8])
  local room = A[ao + 9]
  local hold = tonumber(A[ao + 12])

  if A[ao + 13] == 'stream' then
    if redis.call('EXISTS', K[ko + 6]) == 1 then
      return false, 'PRESENCE_ENDED'
    end
  end

  local from = published_status(uid)
  local raw = redis.call('HGET', K[ko + 2], sid)
  local others -- for a new session: how many the user has besides it
  if not raw then
    others = redis.call('HLEN', K[ko + 2])
    if others >= tonumber(A[ao + 10]) then return false, 'PRESENCE_LIMIT sessions' end
  end
  local rec
  if raw then rec = cjson.decode(raw) else rec = { s = 'online', r = {} } end
  local previous = raw and rec.s
  if A[ao + 5] ~= '' then rec.s = A[ao + 5] end
  rec.d = NOW + ttl
  local joining = room ~= '' and not has(rec.r, room)
  if joining and #rec.r >= tonumber(A[ao + 11]) then
    return false, 'PRESENCE_LIMIT rooms'
  end
  -- Past every refusal: from here on the call changes state.
  if A[ao + 13] ~= 'stream' then redis.call('DEL', K[ko + 6]) end
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
      redis.call('ZADD', K[ko + 7], rec.h[room], entry)
    elseif held then
      rec.h[room] = nil
      if next(rec.h) == nil then rec.h = nil end
      redis.call('ZREM', K[ko + 7], entry)
    end
  end
  rec['!w'] = NOW -- when the user record's expiry was last moved (see fast.lua)
  redis.call('HSET', K[ko + 2], sid, cjson.encode(rec))
  redis.call('SET', K[ko + 3], '1', 'PX', ttl)
  redis.call('ZADD', K[ko + 4], rec.d, uid .. ' ' .. sid)

  redis.call('HSET', K[ko + 1], 'name', A[ao + 3], 'avatar', A[ao + 4], 'seen', NOW)
  if A[ao + 6] == '1' then redis.call('HSET', K[ko + 1], 'meta', A[ao + 7]) end
  redis.call('PEXPIRE', K[ko + 1], RETENTION + ttl)

  local member = room ~= '' and redis.call('ZSCORE', K[ko + 5], uid)
  local to = from
  -- Most calls refresh an existing session without changing its status (the
  -- hottest write path): the user's aggregate cannot change then, so the
  -- sessions are not read again.
  if rec.s ~= previous then
    local rooms
    if others == 0 then
      -- The user's first session: its status and rooms are the user's,
      -- without reading and decoding the sessions back.
      to, rooms = BY_RANK[RANK[rec.s] or 0], {}
      for _, r in ipairs(rec.r) do rooms[r] = true end
    else
      to, rooms = aggregate(uid)
    end
    -- A new membership is announced after the status, so the status event
    -- lists only the rooms the user was already in.
    if room ~= '' and not member then rooms[room] = nil end
    set_status(uid, from, to, sorted_keys(rooms), nil, A[ao + 3], A[ao + 4])
  end

  if room ~= '' and not member then
    redis.call('ZADD', K[ko + 5], NOW, uid)
    emit({ k = 'join', room = room, u = uid, n = A[ao + 3], a = A[ao + 4], to = to,
      mc = redis.call('ZCARD', K[ko + 5]) })
  end
  return to
end
