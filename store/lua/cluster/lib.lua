-- lib.lua (cluster): shared by the Redis Cluster scripts that emit events:
-- the top level of the cluster's FUNCTION library, or prepended to each of
-- them as an EVALSHA script (cluster_functions.go). Not a script by itself.
--
-- Each call touches the keys of one partition only, all declared in KEYS
-- and all in the partition's hash slot, so a call runs on one shard. A
-- partition holds users and rooms (each hashed to one partition), their
-- deadline indexes, and the partition's event log and channel. KEYS[1] is
-- always the partition's log.
--
-- Every script receives the same first three ARGV:
--   ARGV[1] the partition's shard channel (SPUBLISH), ARGV[2] lastSeen
--   retention (ms), ARGV[3] event log max length. Script-specific arguments
--   start at ARGV[4].
--
-- Key layout (P = prefix, T = the partition's tag; '/' separates because
-- no id may contain it):
--   P{T}u/ID/user      hash  name, avatar, meta, seen (ms), st (the user's published status)
--   P{T}u/ID/sess      hash  session id -> "status|gen|entries": gen tells this
--                            instance of the session from an earlier one of the
--                            same id (its creation time in µs); entries are space
--                            separated rooms, "+room" (an API join: lives as long
--                            as the session) or "~room" (held by a stream)
--   P{T}u/ID/ttl/SID   string with PX ttl: its expiry raises the keyspace event
--   P{T}u/ID/end/SID   string with PX ended-retention: the EndSession tombstone
--   P{T}deadlines      zset  "uid sid" -> session deadline ms
--   P{T}r/ID/members   zset  user id -> ms the user became a member
--   P{T}r/ID/ms        hash  "uid sid" -> kind ("+" or "~") then the session's gen:
--                            the room's memberships per session instance
--   P{T}r/ID/n         hash  user id -> how many of the user's sessions are members
--   P{T}r/ID/typing    zset  user id -> ms the user started typing
--   P{T}r/ID/tnames    hash  user id -> display name while typing
--   P{T}mdl            zset  "room uid sid" -> membership deadline ms
--   P{T}tdl            zset  "room uid" -> typing mark deadline ms
--   P{T}log            stream of the partition's events
--   P{T}epoch          string: a random token set when the partition was new
-- A user's sessions are the truth of their liveness and status (user
-- partition); a room's memberships, each with its own deadline, are the
-- truth of who is in it (room partition). A session's end is carried to its
-- rooms by follow-up calls from the node that made it; if that node dies in
-- between, the memberships end at their own deadlines.

-- The per-call values, set by begin(KEYS, ARGV): the first statement of
-- every script that uses the library (presence_cluster.go puts it there).
-- On Redis 7 the library is the top level of a FUNCTION library, run once
-- at FUNCTION LOAD, not once per call (cluster_functions.go).
local CHANNEL, RETENTION, LOGMAX, LOG, t, NOW, HEAD

local function begin(keys, argv)
  CHANNEL, RETENTION, LOGMAX, LOG = argv[1], tonumber(argv[2]), tonumber(argv[3]), keys[1]
  t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  HEAD = nil
end

local RANK = { busy = 3, online = 2, away = 1 }
local BY_RANK = { [0] = 'offline', [1] = 'away', [2] = 'online', [3] = 'busy' }

-- emit appends an event to the partition's log and publishes it as
-- "id payload", the channel's payload carrying one field more than the
-- log's: "pv", the id of the log entry before it ("0-0" for none). A
-- subscriber whose last entry is not pv has missed some (a subscription
-- that began on a node the partition's messages reached only part of the
-- time, around a failover) and reads the log from its last entry instead
-- of taking this one alone. (A field, not a word before the JSON: nodes of
-- the previous version decode the payload and ignore it.)
local function emit(ev)
  ev.at = NOW
  local payload = cjson.encode(ev)
  local prev = HEAD
  if not prev then
    local top = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
    prev = top[1] and top[1][1] or '0-0'
  end
  HEAD = redis.call('XADD', LOG, 'MAXLEN', '~', LOGMAX, '*', 'e', payload)
  redis.call('SPUBLISH', CHANNEL, HEAD .. ' {"pv":"' .. prev .. '",' .. string.sub(payload, 2))
end

-- parse splits a session record into its status, its entries (a list of
-- {kind, room}) and its gen.
local function parse(raw)
  local b1 = string.find(raw, '|', 1, true)
  local b2 = string.find(raw, '|', b1 + 1, true)
  local entries = {}
  for e in string.gmatch(string.sub(raw, b2 + 1), '%S+') do
    entries[#entries + 1] = { string.sub(e, 1, 1), string.sub(e, 2) }
  end
  return string.sub(raw, 1, b1 - 1), entries, string.sub(raw, b1 + 1, b2 - 1)
end

local function format(status, gen, entries)
  local parts = {}
  for i, e in ipairs(entries) do parts[i] = e[1] .. e[2] end
  return status .. '|' .. gen .. '|' .. table.concat(parts, ' ')
end

-- new_gen is a new session instance's gen: the server's time in µs.
local function new_gen()
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

local function sorted_keys(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- aggregate returns the user's status over the sessions in their hash and
-- the set of rooms those sessions are in; skip (a session id, or nil) is
-- left out of the rooms.
local function aggregate(sess, skip)
  local all = redis.call('HGETALL', sess)
  local best = 0
  local rooms = {}
  for i = 2, #all, 2 do
    local st, entries = parse(all[i])
    local r = RANK[st] or 0
    if r > best then best = r end
    if all[i - 1] ~= skip then
      for _, e in ipairs(entries) do rooms[e[2]] = true end
    end
  end
  return BY_RANK[best], rooms
end

-- set_status records and announces a change of the user's aggregate status.
local function set_status(user, uid, from, to, rooms, deadline)
  if from == to then return end
  redis.call('HSET', user, 'st', to)
  local p = redis.call('HMGET', user, 'name', 'avatar')
  emit({ k = 'status', u = uid, n = p[1] or '', a = p[2] or '', from = from, to = to,
         rooms = table.concat(rooms, ' '), dl = deadline })
end

local function typing_list(room, typing, tnames)
  local ids = redis.call('ZRANGE', typing, 0, -1)
  local out = {}
  if #ids == 0 then return out end
  local names = redis.call('HMGET', tnames, unpack(ids))
  for i, id in ipairs(ids) do out[i] = { id = id, name = names[i] or id } end
  return out
end

-- clear_typing removes a typing mark and announces the new set if it existed.
local function clear_typing(room, uid, deadline, typing, tnames, tdl)
  if redis.call('ZREM', typing, uid) == 0 then return end
  redis.call('HDEL', tnames, uid)
  redis.call('ZREM', tdl, room .. ' ' .. uid)
  emit({ k = 'typing', room = room, typing = typing_list(room, typing, tnames), dl = deadline })
end
